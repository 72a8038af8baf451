"""Store fixtures: a throw-away PostgreSQL server and a store URL per backend.

``postgres_server`` starts a private cluster with Debian's binaries
(``/usr/lib/postgresql/*/bin/initdb`` + ``pg_ctl``) in a temporary folder, listening on 127.0.0.1
with a free port and trust authentication; as root it runs the server as the ``postgres`` user.
Tests that need it are skipped (with the reason) only when no server can start.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_fresh = itertools.count()


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parents[1].name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *cmd]
    return ["su", user, "-s", "/bin/sh", "-c", " ".join(cmd)]


def start_postgres(workdir: Path) -> tuple[str, Callable[[], None]]:
    """Start a private PostgreSQL server in ``workdir``; return (admin URL, stop function).

    Raises:
        RuntimeError: no binaries, no unprivileged user to run them, or the server did not start
            (the message says why).
    """
    bindir = _pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
    user: str | None = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as err:
            raise RuntimeError("running as root and there is no 'postgres' user") from err
        user = "postgres"
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
    os.chmod(workdir, 0o700)
    data = workdir / "data"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    run = dict(capture_output=True, text=True, timeout=120, env=env, cwd="/")
    res = subprocess.run(
        _as_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            user,
        ),
        **run,  # type: ignore[call-overload]
    )
    if res.returncode != 0:
        raise RuntimeError(f"initdb failed: {res.stderr.strip()[-800:]}")
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={workdir} "
        "-c fsync=off -c max_connections=100"
    )
    log = workdir / "server.log"
    res = subprocess.run(
        _as_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
            user,
        ),
        **run,  # type: ignore[call-overload]
    )
    if res.returncode != 0:
        tail = log.read_text(errors="replace")[-800:] if log.exists() else res.stderr
        raise RuntimeError(f"pg_ctl start failed: {tail.strip()}")

    def stop() -> None:
        subprocess.run(
            _as_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user),
            **run,  # type: ignore[call-overload]
        )

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Admin URL of a throw-away PostgreSQL server (session-wide); skips when none can start."""
    workdir = Path(tempfile.mkdtemp(prefix="stetho-pg-"))
    try:
        url, stop = start_postgres(workdir)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server could start: {err}")
    try:
        yield url
    finally:
        stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """URL of an empty database on the throw-away server (emptied for each test).

    One database whose tables are dropped before each test: creating a database per test copies
    the template's files, which makes the cluster slow to delete at the end. When a leftover
    connection still locks the tables, a fresh database is created instead.
    """
    import psycopg

    base = postgres_server.rsplit("/", 1)[0]

    def create(name: str) -> None:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not exists.fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')

    create("stetho_test")
    try:
        with psycopg.connect(f"{base}/stetho_test", autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")
            conn.execute("DROP TABLE IF EXISTS scores, alarms, positions, schema_version CASCADE")
    except psycopg.errors.LockNotAvailable:
        name = f"stetho_test_{os.getpid()}_{next(_fresh)}"
        create(name)
        return f"{base}/{name}"
    return f"{base}/stetho_test"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store location on each backend: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "scores.db")
    return str(request.getfixturevalue("postgres_url"))


def server_starting(monkeypatch: pytest.MonkeyPatch, answers_from: int) -> list[float]:
    """Make every ``ScoreStore`` open attempt before the ``answers_from``-th fail as a database
    server that is still starting (:class:`StoreUnreachableError`); returns the attempt times."""
    from stetho.store import ScoreStore, StoreUnreachableError

    real = ScoreStore._open_once.__func__  # type: ignore[attr-defined]
    tries: list[float] = []

    def starting(cls: type[ScoreStore], target: str, **kw: object) -> ScoreStore:
        tries.append(time.monotonic())
        if len(tries) < answers_from:
            raise StoreUnreachableError(f"{target}: connection refused")
        return real(cls, target, **kw)

    monkeypatch.setattr(ScoreStore, "_open_once", classmethod(starting))
    return tries
