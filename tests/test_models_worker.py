"""Local models in their own supervised process (rag/models/worker.py): the same answers as in
process, and a native crash (a real signal sent to the model process mid-answer) reported to
the caller, who lives on, with the model restarted on the next request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from tests.helpers_models import make_tiny_llama
from tests.helpers_rag import make_kb

from rag.models import load_chat_model
from rag.models.errors import ModelCrashed, ModelError
from rag.models.worker import WorkerChatModel
from rag.settings import ModelSettings

ROOT = Path(__file__).resolve().parents[1]
LONG = "Write a long story about a cat who travels around the world."


@pytest.fixture(scope="module")
def isolated():
    lm = load_chat_model(ModelSettings(max_new_tokens=24, temperature=0.0))
    yield lm
    lm.chat_model.worker.close()


@pytest.fixture(scope="module")
def in_process():
    return load_chat_model(ModelSettings(max_new_tokens=24, temperature=0.0), in_process=True)


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _wait_until(condition, deadline: float = 60.0) -> None:
    end = time.time() + deadline
    while time.time() < end:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_default_runs_local_models_in_their_own_process(isolated, in_process):
    chat = isolated.chat_model
    assert isinstance(chat, WorkerChatModel)
    assert chat.worker.pid != os.getpid() and chat.worker.info["pid"] == chat.worker.pid
    assert isolated.is_stand_in and isolated.backend == "llamacpp" and "stand-in" in isolated.notice
    assert isolated.context_window == in_process.context_window == 8192
    assert chat.rope_report == in_process.chat_model.rope_report
    text = "Retrieval-augmented generation 检索增强生成"
    assert isolated.count_tokens(text) == in_process.count_tokens(text) > 5
    messages = [("system", "Be brief."), ("human", "hi")]
    assert chat.format_prompt(messages) == in_process.chat_model.format_prompt(messages)
    # greedy: the same text, streamed in pieces
    pieces = [c.content for c in chat.stream("List three colours.")]
    assert len([p for p in pieces if p]) >= 3
    assert "".join(pieces) == in_process.chat_model.invoke("List three colours.").content != ""


def test_per_call_settings_and_stop_reach_the_model_process(isolated, in_process):
    full = isolated.chat_model.invoke("List three colours.").content
    stop = full.strip()[4:7]
    assert isolated.chat_model.invoke("List three colours.", stop=[stop]).content == full[: full.index(stop)]
    short = isolated.chat_model.model_copy(update={"max_new_tokens": 3}).invoke("List three colours.").content
    assert short == in_process.chat_model.model_copy(update={"max_new_tokens": 3}).invoke("List three colours.").content
    assert isolated.count_tokens(short) <= 3 < isolated.count_tokens(full)


def test_errors_in_the_model_process_arrive_as_themselves(isolated):
    with pytest.raises(ValueError, match="context window is 8192"):
        isolated.chat_model.invoke("猫" * 9000)
    assert isolated.chat_model.invoke("Say hi.").content  # the process is still serving


def test_cancel_stops_the_generation_in_the_model_process(isolated):
    chat = isolated.chat_model.model_copy(update={"max_new_tokens": 400})
    event = threading.Event()
    n = 0
    for _ in chat.stream(LONG, cancel_event=event):
        n += 1
        if n == 2:
            event.set()
    assert n <= 3
    # the model process itself stopped: it uses (almost) no CPU afterwards, where a generation
    # left running would keep a core busy for the rest of its 400 tokens
    time.sleep(0.5)
    ticks = _cpu_ticks(chat.worker.pid)
    time.sleep(1.5)
    assert _cpu_ticks(chat.worker.pid) - ticks < 30, "the model process is still generating"
    # the next request gets its own answer, not the rest of the cancelled story
    expected = isolated.chat_model.model_copy(update={"max_new_tokens": 4}).invoke("Say hi.").content
    assert expected == chat.model_copy(update={"max_new_tokens": 4}).invoke("Say hi.").content


@pytest.mark.parametrize(
    ("sig", "words"),
    [(signal.SIGILL, ["SIGILL", "llamacpp_build.py --force"]), (signal.SIGKILL, ["SIGKILL", "memory"]),
     (signal.SIGSEGV, ["SIGSEGV", "segmentation fault"])],
)
def test_signal_mid_answer_is_reported_and_the_next_question_works(isolated, sig, words):
    chat = isolated.chat_model.model_copy(update={"max_new_tokens": 400})
    worker = chat.worker
    victim = worker.pid
    restarts = worker.restarts
    got: list[str] = []

    def kill_when_generating():
        _wait_until(lambda: got)  # mid-answer: a token has arrived
        os.kill(victim, sig)

    killer = threading.Thread(target=kill_when_generating)
    killer.start()
    with pytest.raises(ModelCrashed) as err:
        for chunk in chat.stream(LONG):
            got.append(chunk.content)
    killer.join()
    message = str(err.value)
    assert got, "the crash came before any token"
    assert "llamacpp" in message and "SmolLM2" in message and "while generating" in message
    for word in words:
        assert word in message
    assert err.value.exitcode == -sig
    # the caller lives on; the next question starts a new model process and is answered
    answer = isolated.chat_model.invoke("List three colours.").content
    assert answer and worker.pid != victim and worker.restarts == restarts + 1


def test_transformers_model_runs_in_a_process_too(tmp_path):
    folder = tmp_path / "chinese-alpaca-2-7b-tiny"
    make_tiny_llama(folder)
    settings = ModelSettings(name=str(folder), max_new_tokens=6, temperature=0.0)
    isolated = load_chat_model(settings)
    try:
        local = load_chat_model(settings, in_process=True)
        assert isolated.backend == "transformers" and isinstance(isolated.chat_model, WorkerChatModel)
        assert isolated.chat_model.invoke("你好").content == local.chat_model.invoke("你好").content
        assert isolated.chat_model.rope_report["ok"] and isolated.chat_model.rope_report == local.chat_model.rope_report
    finally:
        isolated.chat_model.worker.close()


def test_load_errors_in_the_model_process_keep_their_type(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(64))
    in_process = None
    try:
        load_chat_model(ModelSettings(name=str(bad)), in_process=True)
    except Exception as exc:
        in_process = exc
    assert in_process is not None
    with pytest.raises(type(in_process)) as err:  # the same type and words as in the caller's process
        load_chat_model(ModelSettings(name=str(bad)))
    assert type(err.value) is type(in_process) and str(err.value) == str(in_process)
    assert not isinstance(err.value, ModelCrashed)


# --- the CLI ------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(p) for p in text)
    return out


@pytest.mark.slow
def test_cli_ask_reports_a_crashed_model_and_exits_cleanly(tmp_path):
    """`python -m rag ask --stream`: SIGILL to the model process mid-answer. The CLI says what
    happened, which backend and what to do, and exits with 3 (not 132 and silence)."""
    kb = make_kb(tmp_path / "kb")
    # threshold 0: the model must answer (an English story request scores low on Chinese text)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", DOCQA_RETRIEVAL__RELEVANCE_THRESHOLD="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag", "ask", "Write a long story about the giant panda.", "--kb",
         str(kb.store.dir), "--stream", "--max-new-tokens", "400", "--answer-mode", "generate"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        first = proc.stdout.read(1)  # the first streamed character
        assert first, proc.stderr.read()
        kids = [p for p in _children(proc.pid) if "rag.models.worker" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(kids) == 1
        os.kill(kids[0], signal.SIGILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert "SIGILL" in err and "llamacpp" in err and "llamacpp_build.py --force" in err
    # one explanation on the terminal; the native stack went to the model process's log
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    log = Path(err.split("Its log: ")[1].split()[0])
    assert "Fatal Python error: Illegal instruction" in log.read_text(errors="replace")


def test_a_hung_model_process_is_ended_and_restarted(monkeypatch):
    """SIGSTOP freezes the model process (as a deadlock in native code would): a token count
    gives up after the timeout with a clear error, and the next request gets a new process."""
    from rag.models import worker as worker_module

    lm = load_chat_model(ModelSettings(max_new_tokens=4, temperature=0.0))
    try:
        worker = lm.chat_model.worker
        frozen = worker.pid
        monkeypatch.setattr(worker_module, "REQUEST_TIMEOUT_S", 2.0)
        os.kill(frozen, signal.SIGSTOP)
        with pytest.raises(ModelCrashed, match="stopped answering"):
            lm.count_tokens("你好")
        assert lm.count_tokens("你好") > 0 and worker.pid != frozen
    finally:
        lm.chat_model.worker.close()


def test_a_closed_model_stays_closed_and_leaves_no_log():
    lm = load_chat_model(ModelSettings(max_new_tokens=4))
    log = lm.chat_model.worker.log_path
    assert log.is_file()
    lm.chat_model.worker.close()
    assert not log.exists()  # a clean end keeps no log (a crash's log is named in its error)
    with pytest.raises(ModelError, match="was closed"):
        lm.count_tokens("你好")
    assert lm.chat_model.worker.restarts == 0
