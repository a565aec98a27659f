"""``python -m rag``: command-line entry point. Each subcommand lives next to the code it drives."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag", description="Chinese-Alpaca-2 document QA")
    sub = parser.add_subparsers(dest="command", required=True)
    from rag.models import cli as models_cli

    models_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
