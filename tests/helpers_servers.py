"""Throwaway PostgreSQL and Chroma servers on 127.0.0.1, for integration tests and benchmarks.

Usage in a test module::

    from tests.helpers_servers import postgres_server, postgres_url  # noqa: F401

    def test_roundtrip(postgres_url):            # a fresh, empty database per test
        engine = sqlalchemy.create_engine(postgres_url)
        ...

The PostgreSQL server starts once per session and is stopped (and its files removed) at its
end; conftest.py's ``chroma_server`` fixture does the same for a Chroma server. Outside pytest
(bench/load.py) the plain context managers do it::

    with start_postgres() as pg, start_chroma(Path(tmp)) as (host, port):
        url = pg.create_database()

PostgreSQL comes from the system (`apt-get install postgresql`); without it ``start_postgres``
raises :class:`ServerUnavailable` and the tests skip. Chroma is the `chroma` command of the
chromadb package in this virtualenv.
"""

from __future__ import annotations

import getpass
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"


class ServerUnavailable(RuntimeError):
    """The server's programs (or the system user it must run as) are missing: a reason to skip."""


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it for a socket bound to port 0)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def find_pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: from PATH, else the newest /usr/lib/postgresql/N."""
    on_path = shutil.which("initdb")
    if on_path:
        # Debian symlinks them into /usr/local/bin; pg_ctl finds `postgres` next to the real file.
        return Path(os.path.realpath(on_path)).parent
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else -1)
    return Path(found[-1]).parent if found else None


def _as_pg_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root, so root runs it as the `postgres` system user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        """A SQLAlchemy URL for `database` (trust auth: no password)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs):
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname=database, **kwargs
        )

    def create_database(self, name: str | None = None) -> str:
        """Creates an empty database (a unique name when None) and returns its URL."""
        from psycopg import sql

        name = name or f"docqa_{uuid.uuid4().hex[:8]}"
        # CREATE DATABASE cannot run inside a transaction.
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


@contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster in a temporary directory on a free port, stopped (``-m immediate``)
    and deleted at exit. Raises :class:`ServerUnavailable` when PostgreSQL is not installed,
    RuntimeError (with the server log) when it does not start."""
    bindir = find_pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        raise ServerUnavailable(
            "PostgreSQL is not installed (initdb/pg_ctl not found): apt-get install postgresql"
        )
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else getpass.getuser()
    if as_root:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable(
                "running as root without a `postgres` user: apt-get install postgresql"
            ) from None
    # Under /tmp and world-traversable, so that the `postgres` user can reach it when we are root.
    tmp = Path(tempfile.mkdtemp(prefix="docqa-pg-", dir="/tmp"))
    tmp.chmod(0o755)
    if as_root:
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    data, log = tmp / "data", tmp / "server.log"

    def pg(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # cwd=tmp: the postgres user may not be allowed into our working directory.
        return subprocess.run(
            _as_pg_user([str(bindir / args[0]), *args[1:]]),
            cwd=tmp, capture_output=True, text=True, timeout=timeout, check=False,
        )

    def server_log() -> str:
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no server log)"

    started = False
    try:
        done = pg("initdb", "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        port = free_port()
        # Settings go into postgresql.conf rather than `pg_ctl -o`, so that paths need no quoting.
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '{HOST}'\nport = {port}\n"
                f"unix_socket_directories = '{tmp}'\n"
                # Throwaway data: durability only costs time.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        started = True  # from here on, stop it whatever happens
        # -w: pg_ctl waits for startup and notices at once when the postmaster dies.
        done = pg("pg_ctl", "start", "-w", "-t", "30", "-D", str(data), "-l", str(log))
        if done.returncode:
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{server_log()}")
        server = PostgresServer(HOST, port, user)
        # pg_ctl checks the unix socket; poll TCP with psycopg, as the tests will connect.
        deadline = time.monotonic() + 30
        while True:
            try:
                with server.connect(connect_timeout=2):
                    break
            except Exception as exc:  # psycopg.OperationalError while it starts
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections on port {port} in 30 s: {exc}\n"
                        f"server log:\n{server_log()}"
                    ) from exc
                time.sleep(0.1)
        yield server
    finally:
        if started:
            pg("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w")
        shutil.rmtree(tmp, ignore_errors=True)


def chroma_command() -> str:
    """The `chroma` command of this interpreter's environment (else the one on PATH)."""
    found = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if found is None:
        raise ServerUnavailable("the `chroma` command (from the chromadb package) is not installed")
    return found


def _stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Ends a server: politely, then by force."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def start_chroma(path: Path, startup_timeout: float = 60) -> Iterator[tuple[str, int]]:
    """A Chroma server (`chroma run`) on 127.0.0.1 and a free port, its data in ``path/db`` and
    its log in ``path/server.log``; yields ``(host, port)`` once its heartbeat answers and
    terminates it at exit. Raises :class:`ServerUnavailable` without the `chroma` command and
    RuntimeError (with the server log) when the server exits or stays silent at startup."""
    chroma = chroma_command()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = path / "server.log"
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}

    def server_log() -> str:
        return log_path.read_text(errors="replace")[-3000:] if log_path.exists() else "(no server log)"

    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [chroma, "run", "--path", str(path / "db"), "--host", HOST, "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        try:
            # urllib with a timeout: Chroma's own client has no read timeout and would hang.
            url = f"http://{HOST}:{port}/api/v2/heartbeat"
            deadline = time.monotonic() + startup_timeout
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        break
                except OSError as exc:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"the Chroma server exited with status {proc.returncode} at startup\n"
                            f"server log:\n{server_log()}"
                        ) from exc
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the Chroma server did not answer {url} in {startup_timeout:.0f} s: {exc}\n"
                            f"server log:\n{server_log()}"
                        ) from exc
                    time.sleep(0.3)
            yield (HOST, port)
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster in a temporary directory, for the whole session."""
    with ExitStack() as stack:
        try:
            server = stack.enter_context(start_postgres())
        except ServerUnavailable as exc:
            pytest.skip(str(exc))
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database (one per test)."""
    return postgres_server.create_database()
