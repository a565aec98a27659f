"""The app's interface language: ``_("English text", **values)`` shows it in the language this
browser session uses (rag.i18n has the machinery; the Chinese texts are in ui/messages_zh.py).

The language is chosen once per run by :func:`choose_language`: the sidebar's choice, else
``settings.ui.language``, else (``auto``) the browser's language (``st.context.locale``).
``N_("text")`` marks a text for translation where it is defined and returns it unchanged; it is
translated with ``_(...)`` where it is shown.
"""

from __future__ import annotations

import streamlit as st

from rag.i18n import Catalog, resolve_language
from ui.messages_zh import MESSAGES

CATALOG = Catalog(MESSAGES)
LANGUAGE_KEY = "_ui_language_in_force"


def choose_language(setting: str | None) -> str:
    """Fix this session's language for the run: ``setting`` (``auto`` or a code) and the browser's."""
    try:
        locale = st.context.locale
    except Exception:  # outside a browser session (bare scripts, some tests)
        locale = None
    language = resolve_language(setting, locale or "en")
    st.session_state[LANGUAGE_KEY] = language
    return language


def language() -> str:
    return st.session_state.get(LANGUAGE_KEY, "en")


def _(message: str, /, **values: object) -> str:
    """``message`` in this session's language, ``{name}`` fields filled from ``values``."""
    return CATALOG.text(language(), message, **values)


def labels(messages: dict[str, str]) -> dict[str, str]:
    """``{key: English}`` → ``{key: shown text}`` in this session's language. For a widget's
    ``format_func``: it is called outside the run too (by tests and on reruns), where the
    session's language cannot be looked up, so the texts are fixed now."""
    return {key: _(text) for key, text in messages.items()}


def N_(message: str) -> str:  # noqa: N802 - the gettext name
    """Mark ``message`` for translation; it is translated where it is shown, with ``_``."""
    return message


__all__ = ["_", "N_", "labels", "choose_language", "language", "CATALOG"]
