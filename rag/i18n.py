"""Interface languages: English, Simplified Chinese, Traditional Chinese.

Messages are written in English in the code and looked up in a catalogue of Simplified Chinese
translations (the English text is the key, as with gettext); Traditional Chinese is the
Simplified text converted with OpenCC's ``s2twp`` (Taiwan phrasing: 文件 → 檔案), so every
Simplified translation has a Traditional one. A message without a translation is shown in
English, and a test checks that every message the app and the CLIs show has one.

Usage::

    from rag.i18n import Catalog, language_from_locale
    catalog = Catalog({"Added {n} file(s).": "已添加 {n} 个文件。"})
    catalog.text("zh-Hans", "Added {n} file(s).", n=3)     # "已添加 3 个文件。"
    language_from_locale("zh-TW")                           # "zh-Hant"

The language is ``settings.ui.language`` (``DOCQA_UI__LANGUAGE``): ``auto`` follows the
browser (app) or the ``LC_ALL``/``LC_MESSAGES``/``LANG`` variables (CLIs).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Mapping

LANGUAGES = {"en": "English", "zh-Hans": "简体中文", "zh-Hant": "繁體中文"}
"""Language code → its own name (what a language picker shows)."""
TRADITIONAL_REGIONS = ("tw", "hk", "mo", "hant")


def language_from_locale(locale: str | None) -> str:
    """``zh-CN``, ``zh_CN.UTF-8``, ``zh`` → ``zh-Hans``; ``zh-TW``, ``zh-HK``, ``zh-Hant`` →
    ``zh-Hant``; anything else (or nothing) → ``en``."""
    if not locale:
        return "en"
    code = locale.split(".")[0].replace("_", "-").lower()
    parts = code.split("-")
    if parts[0] != "zh":
        return "en"
    return "zh-Hant" if any(p in TRADITIONAL_REGIONS for p in parts[1:]) else "zh-Hans"


def system_language() -> str:
    """The language of the terminal's locale (``LC_ALL``, ``LC_MESSAGES``, then ``LANG``)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value and value not in ("C", "POSIX", "C.UTF-8"):
            return language_from_locale(value)
    return "en"


def resolve_language(setting: str | None, locale: str | None = None) -> str:
    """The language to use: ``setting`` unless it is ``auto``/empty, then ``locale`` (a browser's),
    then the system's."""
    if setting and setting != "auto":
        if setting not in LANGUAGES:
            raise ValueError(f"unknown interface language {setting!r}: auto, {', '.join(LANGUAGES)}")
        return setting
    return language_from_locale(locale) if locale else system_language()


@lru_cache(maxsize=4096)
def to_traditional(text: str) -> str:
    return _converter().convert(text)


@lru_cache(maxsize=1)
def _converter():
    from opencc import OpenCC  # opencc-python-reimplemented, already used for search

    return OpenCC("s2twp")


class Catalog:
    """English messages and their Simplified Chinese translations."""

    def __init__(self, simplified: Mapping[str, str]):
        self.simplified = dict(simplified)

    def text(self, language: str, message: str, /, **values: object) -> str:
        """``message`` in ``language``, with ``{name}`` fields filled from ``values``."""
        if language != "en":
            zh = self.simplified.get(message)
            if zh is not None:
                message = zh if language == "zh-Hans" else to_traditional(zh)
        return message.format(**values) if values else message

    def missing(self, messages: list[str]) -> list[str]:
        """Those of ``messages`` with no translation."""
        return [m for m in messages if m not in self.simplified]


# -- the command-line tools' messages ---------------------------------------------------------------

CLI = Catalog({
    "(also searched: {query})": "（同时检索了：{query}）",
    "added {added}, updated {updated}, unchanged {unchanged}, removed {removed}, chunks {chunks}, failed {failed}":
        "新增 {added}，更新 {updated}，未变 {unchanged}，移除 {removed}，文本块 {chunks}，失败 {failed}",
    "  failed: {path}: {error}": "  失败：{path}：{error}",
    "queued {n} file(s)": "已排队 {n} 个文件",
    "catalogue: {where}": "目录库：{where}",
    "not found: {path}": "找不到：{path}",
    "done: {path}": "完成：{path}",
    "failed: {path} ({error})": "失败：{path}（{error}）",
    "{queued} queued, {running} running, {done} done, {failed} failed":
        "排队 {queued}，进行中 {running}，完成 {done}，失败 {failed}",
    "  skipped {n} file(s) of unsupported types": "  跳过了 {n} 个不支持的文件",
    "  warning: {path}: {warning}": "  警告：{path}：{warning}",
    "OCR page {page}/{pages} of {name}": "正在识别（OCR）{name} 第 {page}/{pages} 页",
    "files {done}/{total}, chunks {chunks_done}/{chunks_total}": "文件 {done}/{total}，文本块 {chunks_done}/{chunks_total}",
    ", about {time} left": "，约剩 {time}",
    "reading": "读取中",
    "embedding": "向量化",
    "added": "已添加",
    "updated": "已更新",
    "unchanged": "未变",
    "failed": "失败",
    "ingest": "导入",
    "error: {message}": "错误：{message}",
    "interrupted": "已中断",
    "(no relevant passage)": "（没有相关段落）",
    "note: {notice}": "提示：{notice}",
    "note: {notice} (--answer-mode generate: let the model write it)": "提示：{notice}（--answer-mode generate：让模型自己写答案）",
    "answer:": "答案：",
    "note: {n} document(s) were indexed by an older version; re-add them to index them again: python -m ingest "
    "--remove ID, then python -m ingest FILE":
        "提示：有 {n} 个文档是用旧版本索引的；重新添加即可重新索引：python -m ingest --remove ID，然后 python -m ingest 文件",
    "{n} file(s) already summarised in {out} (use --force to redo them)": "{n} 个文件已在 {out} 中有摘要（用 --force 重做）",
    "summarised {ok}, already done {before}, failed {failed}; output in {out}": "已摘要 {ok}，此前已完成 {before}，失败 {failed}；输出在 {out}",
})


_cli_language: str | None = None


def use_cli_language(setting: str | None) -> str:
    """Set the CLIs' language from ``settings.ui.language`` (``auto``: the terminal's locale)."""
    global _cli_language
    _cli_language = resolve_language(setting)
    return _cli_language


def cli_language() -> str:
    return _cli_language or system_language()


def cli_text(message: str, /, **values: object) -> str:
    """A CLI message in the CLIs' language (see :func:`use_cli_language`)."""
    return CLI.text(cli_language(), message, **values)


def format_duration(seconds: float, language: str = "en") -> str:
    """``42 s``, ``3 min 5 s``, ``1 h 2 min`` (``42 秒``, ``3 分 5 秒``, ``1 小时 2 分`` in Chinese)."""
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    if language == "en":
        return f"{s} s" if seconds < 60 else f"{m} min {s} s" if seconds < 3600 else f"{h} h {m} min"
    hour = "小時" if language == "zh-Hant" else "小时"
    return f"{s} 秒" if seconds < 60 else f"{m} 分 {s} 秒" if seconds < 3600 else f"{h} {hour} {m} 分"


__all__ = ["LANGUAGES", "Catalog", "CLI", "cli_text", "cli_language", "use_cli_language", "language_from_locale", "resolve_language",
           "system_language", "to_traditional", "format_duration"]
