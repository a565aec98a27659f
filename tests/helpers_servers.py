"""A throwaway PostgreSQL server on 127.0.0.1 for integration tests (the Chroma server is
conftest.py's ``chroma_server``).

Usage in a test module::

    from tests.helpers_servers import postgres_server, postgres_url  # noqa: F401

    def test_roundtrip(postgres_url):            # a fresh, empty database per test
        engine = sqlalchemy.create_engine(postgres_url)
        ...

The server starts once per session and is stopped (and its files removed) at its end.
PostgreSQL comes from the system (`apt-get install postgresql`); the tests skip without it.
"""

from __future__ import annotations

import getpass
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster in a temporary directory, for the whole session."""
    bindir = find_pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL is not installed (initdb/pg_ctl not found): apt-get install postgresql")
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else getpass.getuser()
    if as_root:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a `postgres` user: apt-get install postgresql")
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


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database (one per test)."""
    return postgres_server.create_database()
