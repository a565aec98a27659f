"""``python -m ingest``: add files and folders to a knowledge base, list or remove documents.

    python -m ingest docs/ report.pdf --kb my_kb        # recursive, with a progress bar
    python -m ingest --kb my_kb --list                  # documents, their files, chunk and page counts
    python -m ingest --kb my_kb --remove 3f2a9c         # by id (prefix): the document and all its files
    python -m ingest --kb my_kb --remove handbook.txt   # by path or file name: only that file
    python -m ingest docs/ --json                       # one JSON object on stdout
    python -m ingest --enqueue /shared/docs/            # jobs for ingestion workers (ingest.queue)
    python -m ingest --worker [--follow]                # take and ingest jobs (on each machine)
    python -m ingest --queue                            # jobs queued, running, done, failed

Identical files are stored once as one document with several sources. Removing by path or file
name detaches that file only; the document and its chunks go with its last file. Removing by
document id (or a prefix of it) removes the document with every file that holds it.

The exit code is 1 when any file failed, 2 for usage or knowledge-base errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ingest.errors import StoreError
from rag.i18n import cli_language, cli_text, format_duration, use_cli_language
from rag.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="files and folders (folders are read recursively)")
    parser.add_argument("--kb", help="knowledge-base directory (default: settings store.dir, docs_store/)")
    parser.add_argument("--list", action="store_true", help="list the stored documents with every file (source) of each")
    parser.add_argument("--remove", metavar="DOC", action="append", default=[],
                        help="by document id or id prefix: remove the document with all its files; by path "
                             "or file name: remove only that file (a document goes with its last file); "
                             "repeatable")
    parser.add_argument("--enqueue", action="store_true",
                        help="queue the given files and folders for ingestion workers instead of ingesting them")
    parser.add_argument("--worker", action="store_true",
                        help="take queued files and ingest them until none is left (ingest.queue)")
    parser.add_argument("--follow", action="store_true", help="with --worker: wait for more jobs, until stopped")
    parser.add_argument("--queue", action="store_true", help="show how many jobs are queued, running, done, failed")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.paths or args.list or args.remove or args.worker or args.queue):
        build_parser().print_usage(sys.stderr)
        print("python -m ingest: give files or folders, --list, --remove DOC, --worker or --queue", file=sys.stderr)
        return 2
    if args.enqueue and not args.paths:
        print("python -m ingest: --enqueue needs files or folders", file=sys.stderr)
        return 2
    settings = Settings()
    use_cli_language(settings.ui.language)
    if args.kb:
        settings = settings.with_store(args.kb)
    try:
        if args.enqueue or args.worker or args.queue:
            return _run_queue(args, settings)
        return _run(args, settings)
    except StoreError as exc:
        print(cli_text("error: {message}", message=exc), file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline import FileFailure, Ingestor, IngestReport, print_report

    ingestor = Ingestor(settings)
    report = IngestReport()
    exit_code = 0
    for ref in args.remove:
        if ingestor.remove(ref):
            report.removed += 1
        else:
            report.failed.append(FileFailure(
                ref, "no stored document or file matches this id, path or name (or more than one does)"))
    if args.paths:
        bar = None
        if not args.no_progress:  # the bar goes to stderr, so --json output stays clean
            from tqdm import tqdm

            bar = tqdm(total=1000, file=sys.stderr, dynamic_ncols=True,
                       bar_format=cli_text("ingest") + ": {percentage:3.0f}%|{bar}| {desc}")

        def progress(event) -> None:
            if bar is None:
                return
            bar.n = int(event.fraction * 1000)
            left = "" if event.eta_s is None else cli_text(
                ", about {time} left", time=format_duration(event.eta_s, cli_language()))
            counts = cli_text("files {done}/{total}, chunks {chunks_done}/{chunks_total}", done=event.done,
                              total=event.total, chunks_done=event.chunks_done, chunks_total=event.chunks_total)
            name = Path(event.path).name[:30]
            if event.status == "ocr":  # a scanned PDF, page by page (seconds a page)
                doing = cli_text("OCR page {page}/{pages} of {name}", page=event.page, pages=event.pages, name=name)
            else:
                doing = f"{name} {cli_text(event.status)}"
            bar.set_description_str(f"{counts}{left} · {doing}", refresh=True)

        run = ingestor.ingest(args.paths, progress=progress)
        if bar is not None:
            bar.close()
        report.added, report.updated, report.unchanged = run.added, run.updated, run.unchanged
        report.removed += run.removed
        report.chunks = run.chunks
        report.failed.extend(run.failed)
        report.skipped = run.skipped
        report.warnings = run.warnings
    if report.failed:
        exit_code = 1
    if args.list:
        docs = ingestor.store.documents()
        if args.json:
            listing = [
                {
                    "doc_id": d.doc_id,
                    "title": d.title,
                    "type": d.file_type,
                    "sources": d.sources,
                    "pages": d.pages,
                    "chunks": d.chunk_count,
                    "added_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(d.added_at)),
                }
                for d in docs
            ]
            if args.paths or args.remove:
                print(json.dumps({**report.to_dict(), "documents": listing}, ensure_ascii=False))
            else:
                print(json.dumps({"documents": listing}, ensure_ascii=False))
            return exit_code
        _print_listing(docs)
        outdated = ingestor.store.outdated_documents()
        if outdated:
            print(cli_text("note: {n} document(s) were indexed by an older version; re-add them to index them "
                           "again: python -m ingest --remove ID, then python -m ingest FILE", n=len(outdated)),
                  file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    elif args.paths or args.remove:
        print_report(report)
    return exit_code


def _run_queue(args: argparse.Namespace, settings: Settings) -> int:
    """--enqueue, --worker, --queue (ingest.queue)."""
    from ingest.queue import IngestQueue, run_worker

    queue = IngestQueue.open(settings)
    # which catalogue: without the shared settings loaded, a worker would quietly use a local one
    result: dict = {"catalogue": queue.catalog.where()}
    if not args.json:
        print(cli_text("catalogue: {where}", where=result["catalogue"]), file=sys.stderr)
    exit_code = 0
    if args.enqueue:
        added, missing = queue.enqueue(args.paths)
        result.update(queued=added, missing=missing)
        if not args.json:
            print(cli_text("queued {n} file(s)", n=added))
            for path in missing:
                print(cli_text("not found: {path}", path=path), file=sys.stderr)
        exit_code = 1 if missing else 0
    if args.worker:
        def said(job, error) -> None:
            if not args.json:
                print(cli_text("failed: {path} ({error})", path=job.path, error=error) if error
                      else cli_text("done: {path}", path=job.path), flush=True)

        report = run_worker(settings, follow=args.follow, on_job=said)
        result["worker"] = report.to_dict()
        exit_code = 1 if report.failed else exit_code
    if args.queue or args.worker:
        result["jobs"] = queue.counts()
        if not args.json:
            print(cli_text("{queued} queued, {running} running, {done} done, {failed} failed", **result["jobs"]))
            for path, error in queue.failures():
                print(cli_text("  failed: {path}: {error}", path=path, error=error), file=sys.stderr)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return exit_code


def _print_listing(docs) -> None:
    """One line per document, then one line per further file that holds the same content."""
    if not docs:
        print("(no documents)")
        return
    print(f"{'id':12}  {'pages':>5}  {'chunks':>6}  {'added':16}  sources")
    indent = " " * (12 + 2 + 5 + 2 + 6 + 2 + 16 + 2)
    for d in docs:
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.added_at))
        first, *more = d.sources or [""]
        print(f"{d.doc_id[:12]:12}  {d.pages:>5}  {d.chunk_count:>6}  {added:16}  {first}")
        for source in more:
            print(f"{indent}{source}")
