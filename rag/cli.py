"""``python -m rag``: command-line entry point.

Subcommands::

    python -m rag ask "问题" [--kb DIR] [--model NAME] [--k 5] [--doc REF ...] [--json] [--stream]
    python -m rag retrieve "问题" [--kb DIR] [--k 5] [--json] [--reranker MODEL] [--rerank-candidates 20] [--translate]
    python -m rag retrieve --questions FILE.jsonl [--kb DIR] [--k 5] [--json]
    python -m rag summarize PATH... --out DIR [--format md|jsonl] [--strategy auto|stuff|map_reduce|refine] [--force]
    python -m rag models [--json]

``--kb`` defaults to ``settings.store.dir`` (``DOCQA_STORE__DIR``); ``--model`` overrides
``settings.model.name``; ``--reranker`` / ``--rerank-candidates`` (ask and retrieve) override
``settings.retrieval.reranker`` / ``rerank_candidates`` (``--reranker ""`` switches a configured
one off). ``retrieve`` searches an English question about Chinese documents with its words
rendered by a dictionary too; ``--translate`` loads the chat model to search a question's translation
when the documents are in the other language (rag.translate), as ``ask`` does. Models and the
embedder are loaded once per call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from rag.i18n import cli_text, use_cli_language


def _at_least(value: str, minimum: int, what: str = "a whole number") -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(what) from None
    if n < minimum:
        raise argparse.ArgumentTypeError(f"at least {minimum}")
    return n


def _budget(value: str) -> str | int:
    if value in ("auto", "window"):
        return value
    return _at_least(value, 256, "auto, window or a number of tokens")


def _settings(args: argparse.Namespace):
    from rag.settings import Settings

    settings = Settings()
    use_cli_language(settings.ui.language)
    if getattr(args, "kb", None):
        settings = settings.with_store(args.kb)
    if getattr(args, "model", None):
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"name": args.model})})
    if getattr(args, "max_new_tokens", None):
        settings = settings.model_copy(
            update={"model": settings.model.model_copy(update={"max_new_tokens": args.max_new_tokens})}
        )
    retrieval = {name: getattr(args, name) for name in ("reranker", "rerank_candidates")
                 if getattr(args, name, None) is not None}
    if retrieval:
        settings = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update=retrieval)})
    if getattr(args, "context_budget", None):
        settings = settings.model_copy(
            update={"answer": settings.answer.model_copy(update={"context_budget": args.context_budget})}
        )
    return settings


def _doc_ids(kb, refs: list[str] | None) -> list[str] | None:
    if not refs:
        return None
    ids = []
    for ref in refs:
        doc = kb.store.find(ref)
        if doc is None:
            raise SystemExit(f"error: no document matches {ref!r} in {kb.store.dir}")
        ids.append(doc.doc_id)
    return ids


def _add_common(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.add_argument("--kb", metavar="DIR", help="knowledge-base directory (default: settings.store.dir)")
    if model:
        p.add_argument("--model", metavar="NAME", help="chat model (overrides settings.model.name)")
        p.add_argument("--max-new-tokens", type=int, help="longest answer in tokens (settings.model.max_new_tokens)")


def _positive(value: str) -> int:
    return _at_least(value, 1)


def _add_rerank(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reranker", metavar="MODEL", default=None,
                   help="rerank the best fused candidates with this cross-encoder: Hub name or local folder, "
                        'e.g. BAAI/bge-reranker-v2-m3 (settings.retrieval.reranker; "" = off)')
    p.add_argument("--rerank-candidates", type=_positive, metavar="N", default=None,
                   help="fused candidates the reranker reads per question (settings.retrieval.rerank_candidates, 20)")


# -- retrieve -------------------------------------------------------------------------------------


def _read_questions(path: str):
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for line_no, line in enumerate(stream, 1):
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"error: {path}:{line_no}: not JSON ({exc})")
            if not isinstance(item, dict) or "question" not in item:
                raise SystemExit(f'error: {path}:{line_no}: expected {{"id": ..., "question": ...}}')
            yield item.get("id", line_no), str(item["question"])


def run_retrieve(args: argparse.Namespace) -> int:
    from rag.api import KnowledgeBase

    if bool(args.question) == bool(args.questions):
        raise SystemExit("error: give one question, or --questions FILE.jsonl")
    from rag.translate import search_with_translation, translation_dict

    kb = KnowledgeBase(settings=_settings(args))
    doc_ids = _doc_ids(kb, args.doc)
    if args.translate and not kb.settings.retrieval.translate_questions:
        raise SystemExit("error: --translate, but settings.retrieval.translate_questions is false")
    # as answers search: with the chat model's translation (--translate loads it), else the
    # dictionary's words for an English question about Chinese documents (rag.translate)
    translator = kb.translator(load_model=args.translate)
    if args.translate and translator.model.notice and not args.json:
        print(cli_text("note: {notice}", notice=translator.model.notice), file=sys.stderr)
    items = [(None, args.question)] if args.question else _read_questions(args.questions)
    for qid, question in items:
        hits, translation = search_with_translation(
            kb.retriever, translator, question, args.k or kb.settings.retrieval.k, doc_ids,
            mode=args.mode, relevance_threshold=args.threshold, mmr=args.mmr or None,
        )
        if translation is not None and translation.note and not args.json:
            print(cli_text("note: {notice}", notice=translation.note), file=sys.stderr)
        if args.json:
            record = {"hits": [h.to_dict() for h in hits]}
            if translation is not None:
                record["translation"] = translation_dict(translation)
            if qid is not None or args.questions:
                record = {"id": qid, **record}
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            if qid is not None:
                print(f"## {qid}: {question}")
            if translation is not None and translation.text:
                print(cli_text("(also searched: {query})", query=translation.text))
            if not hits:
                print(cli_text("(no relevant passage)"))
            for i, h in enumerate(hits, 1):
                where = h.file_name + (f" p.{h.page}" if h.page is not None else "") + f" #{h.chunk}"
                text = " ".join(h.text.split())
                print(f"[{i}] {h.score:.3f}  {where}\n    {text[:200]}{'…' if len(text) > 200 else ''}")
            sys.stdout.flush()
    return 0


# -- ask --------------------------------------------------------------------------------------------


def run_ask(args: argparse.Namespace) -> int:
    from rag.api import KnowledgeBase

    kb = KnowledgeBase(settings=_settings(args))
    doc_ids = _doc_ids(kb, args.doc)
    mode = kb.answer_mode(args.answer_mode)
    if mode == "generate":  # quote mode needs no chat model
        model = kb.model
        if model.notice and not args.json:
            print(cli_text("note: {notice}", notice=model.notice), file=sys.stderr)
    elif not args.json:
        from rag.quotes import quote_notice

        print(cli_text("note: {notice} (--answer-mode generate: let the model write it)", notice=quote_notice()),
              file=sys.stderr)
    if args.stream:
        final = None
        streamed = ""
        for event in kb.stream_ask(args.question, doc_ids=doc_ids, k=args.k, mode=mode):
            if event["type"] == "token":
                streamed += event["text"]
                if args.json:
                    print(json.dumps(event, ensure_ascii=False), flush=True)
                else:
                    print(event["text"], end="", flush=True)
            elif event["type"] == "sources":
                if args.json:  # as soon as retrieval is done (text output lists them at the end)
                    print(json.dumps(event, ensure_ascii=False), flush=True)
            else:
                final = event
        if args.json:
            print(json.dumps(final, ensure_ascii=False), flush=True)
        else:
            print()
            _print_translation_note(final)
            if final["answer"].strip() != streamed.strip():  # the cleaned answer differs from the stream
                print("\n" + cli_text("answer:") + f"\n{final['answer']}")
            _print_sources(final["sources"])
        return 0
    result = kb.ask(args.question, doc_ids=doc_ids, k=args.k, mode=mode)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        _print_translation_note(result)
        print(result["answer"])
        _print_sources(result["sources"])
    return 0


def _print_translation_note(result: dict) -> None:
    note = (result.get("translation") or {}).get("note")
    if note:
        print(cli_text("note: {notice}", notice=note), file=sys.stderr)


def _print_sources(sources: list[dict]) -> None:
    if not sources:
        return
    print()
    for s in sources:
        where = s["file_name"] + (f" p.{s['page']}" if s.get("page") is not None else "")
        text = " ".join(s["text"].split())
        print(f"[{s['n']}] {where} ({s['score']:.2f}): {text[:120]}{'…' if len(text) > 120 else ''}")


# -- summarize --------------------------------------------------------------------------------------

MANIFEST = "manifest.json"


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def _load_manifest(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save_manifest(out: Path, manifest: dict) -> None:
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, out / MANIFEST)


def _output_name(path: Path, digest: str, fmt: str) -> str:
    return f"{path.stem}-{digest[:8]}.md" if fmt == "md" else "summaries.jsonl"


def run_summarize(args: argparse.Namespace) -> int:
    from ingest.loaders import load_document
    from ingest.pipeline import discover
    from rag.summarize import SourceText, Summarizer

    settings = _settings(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files, skipped, missing = discover(args.paths)
    manifest = _load_manifest(out)
    failures: list[tuple[str, str]] = [(f.path, f.error) for f in missing]
    todo: list[tuple[Path, str]] = []
    done_before = 0
    for path in files:
        try:
            digest = _file_hash(path)
        except OSError as exc:
            failures.append((str(path), f"cannot read the file ({exc})"))
            continue
        entry = manifest.get(digest)
        finished = (
            entry
            and entry.get("status") == "ok"
            and entry.get("format") == args.format
            and (out / entry["output"]).exists()
        )
        if finished and not args.force:
            done_before += 1
            continue
        todo.append((path, digest))
    if skipped:
        print(cli_text("  skipped {n} file(s) of unsupported types", n=len(skipped)).strip(), file=sys.stderr)
    if done_before:
        print(cli_text("{n} file(s) already summarised in {out} (use --force to redo them)", n=done_before, out=out),
              file=sys.stderr)

    summarizer = None
    if todo:
        from rag.models.loader import load_chat_model

        model = load_chat_model(settings)
        if model.notice:
            print(cli_text("note: {notice}", notice=model.notice), file=sys.stderr)
        summarizer = Summarizer(model, system_prompt=settings.model.system_prompt)

    bar = _progress_bar(len(todo), args.quiet)
    for path, digest in todo:
        bar.set_description(path.name[:30])
        started = time.time()
        try:
            limit = int(settings.ingest.max_file_mb * 1024 * 1024)
            loaded = load_document(path, max_bytes=limit)
            text = loaded.text
            if not text.strip():
                raise ValueError("no text to summarise")

            def step(p, bar=bar):
                bar.set_postfix_str(f"{p.phase} {p.done}/{p.total}")

            result = summarizer.summarize([SourceText(path.name, text, digest)], args.strategy, step)
            record = {
                "path": str(path),
                "content_hash": digest,
                "title": loaded.title,
                "summary": result.text,
                "strategy": result.strategy,
                "steps": result.steps,
                "language": result.language,
                "model": summarizer.model.name,
                "seconds": round(time.time() - started, 2),
            }
            name = _output_name(path, digest, args.format)
            if args.format == "md":
                body = (
                    f"# {loaded.title}\n\n{result.text}\n\n---\n"
                    f"source: {path}  \nstrategy: {result.strategy}, steps: {result.steps}, model: {summarizer.model.name}\n"
                )
                tmp = out / f".{name}.tmp"
                tmp.write_text(body, encoding="utf-8")
                os.replace(tmp, out / name)
            else:
                with open(out / name, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            manifest[digest] = {"path": str(path), "output": name, "format": args.format, "status": "ok",
                                "strategy": result.strategy}
        except Exception as exc:  # one bad file must not stop the batch
            reason = str(exc) if exc.__class__.__name__ == "DocumentError" or hasattr(exc, "reason") else f"{type(exc).__name__}: {exc}"
            failures.append((str(path), reason))
            manifest[digest] = {"path": str(path), "output": "", "format": args.format, "status": "failed", "error": reason}
            bar.write(cli_text("  failed: {path}: {error}", path=path, error=reason).strip())
        _save_manifest(out, manifest)
        bar.update(1)
    bar.close()
    ok = len(todo) - sum(1 for p, _ in failures if any(p == str(t) for t, _ in todo))
    print(cli_text("summarised {ok}, already done {before}, failed {failed}; output in {out}", ok=ok,
                   before=done_before, failed=len(failures), out=out), file=sys.stderr)
    for path, reason in failures:
        print(cli_text("  failed: {path}: {error}", path=path, error=reason), file=sys.stderr)
    return 1 if failures else 0


def _progress_bar(total: int, quiet: bool):
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="file", disable=quiet or total == 0, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        class _Bar:
            def __init__(self):
                self.n = 0

            def set_description(self, _): ...
            def set_postfix_str(self, _): ...
            def write(self, text):
                print(text, file=sys.stderr)

            def update(self, n):
                self.n += n
                if not quiet:
                    print(f"{self.n}/{total}", file=sys.stderr)

            def close(self): ...

        return _Bar()


# -- parser -----------------------------------------------------------------------------------------


def register(sub) -> None:
    p = sub.add_parser("ask", help="answer a question from the knowledge base, citing sources")
    p.add_argument("question")
    _add_common(p)
    p.add_argument("--k", type=int, help="passages to retrieve (settings.retrieval.k)")
    p.add_argument("--doc", action="append", metavar="REF", help="only these documents (id, path or file name); repeatable")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--stream", action="store_true", help="print the answer while it is generated")
    p.add_argument("--answer-mode", choices=["auto", "generate", "quote"], default=None,
                   help="generate: the model writes the answer; quote: the passages' best sentences, no model; "
                        "auto (settings.answer.mode): quotes while only the stand-in model is available")
    p.add_argument("--context-budget", metavar="auto|window|TOKENS", default=None, type=_budget,
                   help="how much context a generated answer's prompt may hold (settings.answer.context_budget): "
                        "auto = what the model reads within settings.answer.first_token_s, window = all of it")
    _add_rerank(p)
    p.set_defaults(func=run_ask)

    p = sub.add_parser("retrieve", help="show the passages retrieved for a question (no model unless --translate)")
    p.add_argument("question", nargs="?")
    p.add_argument("--questions", metavar="FILE.jsonl", help='one {"id", "question"} per line ("-" = stdin)')
    _add_common(p, model=False)
    p.add_argument("--k", type=int, default=None, help="hits per question (settings.retrieval.k)")
    p.add_argument("--doc", action="append", metavar="REF", help="only these documents; repeatable")
    p.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default=None)
    p.add_argument("--mmr", action="store_true", help="diversify hits (maximal marginal relevance)")
    p.add_argument("--threshold", type=float, default=None,
                   help="drop hits scoring below this (0..1; with a reranker, its score)")
    _add_rerank(p)
    p.add_argument("--translate", action="store_true",
                   help="load the chat model and also search each question's translation when the documents are in "
                        "the other language (as ask does; cached per question); without it, an English question "
                        "about Chinese documents is searched with its words rendered by a dictionary")
    p.add_argument("--json", action="store_true",
                   help='one {"id", "hits": [...]} JSON object per line (with a reranker each hit has rerank_score '
                        'and hybrid_score)')
    p.set_defaults(func=run_retrieve)

    p = sub.add_parser("summarize", help="summarise files and folders into an output folder (resumable)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--format", choices=["md", "jsonl"], default="md")
    p.add_argument("--strategy", choices=["auto", "stuff", "map_reduce", "refine"], default="auto")
    p.add_argument("--force", action="store_true", help="summarise again files already done")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--model", metavar="NAME", help="chat model (overrides settings.model.name)")
    p.add_argument("--max-new-tokens", type=int, help="longest summary step in tokens")
    p.set_defaults(func=run_summarize)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag", description="Chinese-Alpaca-2 document QA")
    sub = parser.add_subparsers(dest="command", required=True)
    from rag.models import cli as models_cli

    models_cli.register(sub)
    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 some files failed (summarize), 2 usage, 3 the model (or the reranker,
    rag.rerank.RerankerUnavailable) could not be loaded or its process died (the message says
    which model, what happened and what to do)."""
    from rag.models.errors import ModelError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModelError as exc:
        sys.stdout.flush()
        print("\n" + cli_text("error: {message}", message=exc), file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\n" + cli_text("interrupted"), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
