"""Interface languages: every message the app and the CLIs show has its Chinese text; the
language follows the setting, the browser or the terminal; Traditional Chinese is derived."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rag.i18n import CLI, LANGUAGES, format_duration, language_from_locale, resolve_language
from tests.conftest import REPO

FIELD = re.compile(r"\{(\w*)[^}]*\}")


def marked_messages(*files: Path, names=("_", "N_")) -> set[str]:
    """String literals passed to ``_``/``N_`` (or ``cli_text``) in ``files``."""
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.add(node.args[0].value)
    return found


def test_every_app_message_has_a_chinese_text_with_the_same_fields():
    from ui.messages_zh import MESSAGES

    shown = marked_messages(REPO / "ui" / "app.py", REPO / "ui" / "components.py", REPO / "ui" / "services.py")
    assert len(shown) > 120  # the whole app goes through _(), not a few labels
    assert sorted(m for m in shown if m not in MESSAGES) == []
    for english, chinese in MESSAGES.items():
        assert sorted(FIELD.findall(english)) == sorted(FIELD.findall(chinese)), english
        assert chinese.strip() and re.search(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]", chinese), english


def test_every_cli_message_has_a_chinese_text():
    files = [REPO / "rag" / "cli.py", REPO / "ingest" / "cli.py", REPO / "ingest" / "pipeline.py"]
    shown = marked_messages(*files, names=("cli_text",))
    assert len(shown) >= 10
    assert sorted(CLI.missing(sorted(shown))) == []
    for english, chinese in CLI.simplified.items():
        assert sorted(FIELD.findall(english)) == sorted(FIELD.findall(chinese)), english


@pytest.mark.parametrize("locale, language", [
    ("zh-CN", "zh-Hans"), ("zh_CN.UTF-8", "zh-Hans"), ("zh", "zh-Hans"), ("zh-Hans-SG", "zh-Hans"),
    ("zh-TW", "zh-Hant"), ("zh_HK.UTF-8", "zh-Hant"), ("zh-Hant", "zh-Hant"), ("zh-MO", "zh-Hant"),
    ("en-US", "en"), ("de-DE", "en"), ("", "en"), (None, "en"),
])
def test_language_from_locale(locale, language):
    assert language_from_locale(locale) == language


def test_the_setting_wins_over_the_browser_and_bad_settings_are_refused():
    assert resolve_language("en", "zh-CN") == "en"
    assert resolve_language("auto", "zh-TW") == "zh-Hant"
    with pytest.raises(ValueError, match="unknown interface language"):
        resolve_language("fr")
    assert set(LANGUAGES) == {"en", "zh-Hans", "zh-Hant"}


def test_traditional_chinese_is_derived_with_taiwan_phrasing():
    from ui.i18n import CATALOG

    assert CATALOG.text("zh-Hans", "Knowledge base") == "知识库"
    assert CATALOG.text("zh-Hant", "Knowledge base") == "知識庫"
    assert CATALOG.text("zh-Hant", "Documents ({n})", n=3) == "文件（3）"  # 文档 → 文件 (Taiwan), not 文檔
    assert CATALOG.text("zh-Hant", "Delete {name}", name="北京.txt") == "刪除 北京.txt"  # values are not converted
    assert CATALOG.text("en", "Documents ({n})", n=3) == "Documents (3)"
    assert CATALOG.text("zh-Hans", "no such message {x}", x=1) == "no such message 1"  # untranslated: English
    assert format_duration(65, "zh-Hans") == "1 分 5 秒" and format_duration(3700, "zh-Hant") == "1 小時 1 分"
    assert format_duration(65) == "1 min 5 s"


def test_the_app_follows_the_browser_language(monkeypatch):
    from ui import i18n

    class Context:
        locale = "zh-TW"

    class FakeStreamlit:
        context = Context()
        session_state: dict = {}

    monkeypatch.setattr(i18n, "st", FakeStreamlit)
    assert i18n.choose_language("auto") == "zh-Hant" and i18n._("Chat") == "問答"
    Context.locale = "en-GB"
    assert i18n.choose_language("auto") == "en" and i18n._("Chat") == "Chat"
    assert i18n.choose_language("zh-Hans") == "zh-Hans" and i18n._("Chat") == "问答"


def test_the_app_in_traditional_chinese(tmp_path, embedder):
    from rag.settings import Settings
    from rag.testing import fake_loaded_model
    from tests.helpers_ui import make_app, run, texts
    from ui.i18n import CATALOG

    at = run(make_app(Settings(store={"dir": tmp_path / "kb"}, ui={"language": "zh-Hant"}), fake_loaded_model()))
    assert at.title[0].value == CATALOG.text("zh-Hant", "Ask your documents") == "向你的文件提問"
    page = texts(at)
    assert "知識庫" in page and "知识库" not in page


def run_ingest(tmp_path: Path, env: dict) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    doc = tmp_path / "a.txt"
    doc.write_text("北京是中华人民共和国的首都。", encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_ALL", "LC_MESSAGES", "DOCQA_UI__LANGUAGE")}
    out = subprocess.run([sys.executable, "-m", "ingest", str(doc), "--kb", str(tmp_path / "kb"), "--no-progress"],
                         cwd=tmp_path, env={**clean, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_the_cli_speaks_the_terminal_language(tmp_path, embedder):
    assert "新增 1，更新 0" in run_ingest(tmp_path / "s", {"LANG": "zh_CN.UTF-8"})
    assert "新增 1，更新 0，未變 0" in run_ingest(tmp_path / "t", {"LANG": "zh_TW.UTF-8"})
    assert "added 1, updated 0" in run_ingest(tmp_path / "e", {"LANG": "zh_CN.UTF-8", "DOCQA_UI__LANGUAGE": "en"})
    assert "added 1, updated 0" in run_ingest(tmp_path / "c", {"LANG": "C.UTF-8"})
