"""``python -m rag models [--json]``: the Chinese-Alpaca-2 family this project knows."""

from __future__ import annotations

import argparse
import json

from rag.models import registry


def run(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps([m.to_dict() for m in registry.list_models()], ensure_ascii=False, indent=2))
    else:
        print(registry.table())
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list the Chinese-LLaMA-2 / Alpaca-2 variants (registry keys for DOCQA_MODEL__NAME)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run)
