"""Integration suite: real servers, pools and databases (``tox -e integration``).

Collected but skipped unless ``INHERIT_INTEGRATION=1`` (the tox env sets it):
the suite needs gunicorn, uWSGI, Celery, redis-server and PostgreSQL. Servers
are started once per session on free 127.0.0.1 ports and stopped by PID.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import BACKENDS, Process, free_port, unavailable, wait_until

HERE = Path(__file__).resolve().parent
ENABLED = os.environ.get("INHERIT_INTEGRATION") == "1"
_FIGURES: list[tuple[str, dict[str, Any]]] = []
_tags = itertools.count(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(
        reason="integration suite: run it with tox -e integration (INHERIT_INTEGRATION=1)"
    )
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("integration figures")
    for nodeid, figures in _FIGURES:
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {shown}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What the test measured (workers, streams, connections, hooks): printed at the end."""
    recorded: dict[str, Any] = {}
    _FIGURES.append((request.node.nodeid, recorded))
    return recorded


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``default`` (what the library picks here) or ``getpid`` (INHERIT_BACKEND=getpid)."""
    return str(request.param)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A scratch directory for one test's servers and workers; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="inherit-it-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tag() -> str:
    """A prefix for connection names that is unique to this test."""
    return f"it{os.getpid()}n{next(_tags)}"


@dataclass
class RedisServer:
    port: int
    pid: int

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis.from_url(self.url(db), socket_timeout=10)

    def clients(self, prefix: str) -> dict[str, int]:
        """``CLIENT LIST``: connection name -> client id, for names starting with ``prefix``."""
        with self.client() as r:
            return {c["name"]: int(c["id"]) for c in r.client_list() if c["name"].startswith(prefix)}


@dataclass
class PostgresServer:
    port: int
    pid: int
    dsn: str

    def sessions(self, prefix: str) -> dict[str, int]:
        """``pg_stat_activity``: application_name -> backend pid, for names starting with ``prefix``."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "select application_name, pid from pg_stat_activity where application_name like %s",
                (prefix + "%",),
            ).fetchall()
        return {str(name): int(pid) for name, pid in rows}


def _start(make: Any, attempts: int = 3) -> Any:
    """Start a server on a fresh free port; retry when another process took the port first."""
    for attempt in range(attempts):
        try:
            return make(free_port())
        except RuntimeError:  # the server exited during start-up (address in use, most likely)
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """redis-server on 127.0.0.1, no persistence, for the whole session."""
    exe = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)), None
    )
    if exe is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    try:
        import redis
    except ImportError:
        unavailable("redis-py is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="inherit-redis-"))
    procs: list[Process] = []

    def make(port: int) -> RedisServer:
        argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(tmp), "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"]
        proc = Process(argv, log=tmp / f"redis-{port}.log", cwd=tmp)
        procs.append(proc)

        def ping() -> bool:
            try:
                with redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1) as r:
                    return bool(r.ping())
            except redis.ConnectionError:
                return False

        wait_until(ping, timeout=30, what="redis-server", proc=proc)
        return RedisServer(port, proc.pid)

    try:
        yield _start(make)
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _pg_bindir() -> str | None:
    """Where initdb and postgres are: PATH first (resolving links), then Debian's versioned dirs."""
    found = shutil.which("initdb")
    if found:
        real = os.path.dirname(os.path.realpath(found))
        if os.access(os.path.join(real, "postgres"), os.X_OK):
            return real
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(candidates[-1]) if candidates else None


def _unprivileged() -> tuple[list[str], int, int]:
    """A command prefix that drops root for PostgreSQL (which refuses to run as root)."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        uid, gid = entry.pw_uid, entry.pw_gid
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"], uid, gid
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], uid, gid
        unavailable(
            "running as root, and neither setpriv nor runuser is here to drop privileges for PostgreSQL"
        )
    unavailable("running as root, and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, no fsync), run as an unprivileged user."""
    bindir = _pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed")
    prefix, uid, gid = _unprivileged()
    base = Path(tempfile.mkdtemp(prefix="inherit-pg-"))
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        os.chown(base, uid, gid)
    data = base / "data"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    procs: list[Process] = []
    try:
        initdb = [f"{bindir}/initdb", "-D", str(data), "-U", "inherit", "-A", "trust", "-E", "UTF8"]
        init = subprocess.run(
            [*prefix, *initdb, "--no-locale", "--no-sync"],
            env=env,
            cwd=base,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")

        def make(port: int) -> PostgresServer:
            settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200"]
            argv = [*prefix, f"{bindir}/postgres", "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
            argv += ["-k", str(base), *(a for s in settings for a in ("-c", s))]
            log = base / f"postgres-{port}.log"
            log.touch()
            proc = Process(argv, log=log, env=env, cwd=base)
            procs.append(proc)
            dsn = f"host=127.0.0.1 port={port} user=inherit dbname=postgres connect_timeout=5"

            def ready() -> bool:
                try:
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        conn.execute("select 1")
                    return True
                except psycopg.OperationalError:
                    return False

            wait_until(ready, timeout=60, what="postgres", proc=proc)
            return PostgresServer(port, proc.pid, dsn)

        yield _start(make)
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(base, ignore_errors=True)
