"""uWSGI, a master and 4 workers: without fork hooks, with --py-call-osafterfork, and with
--py-call-uwsgi-fork-hooks.

uWSGI loads the app in the master and forks the workers from C. By default no
``os.register_at_fork`` hook runs in them, so the library notices the new
process on its own (the flag page with a kernel backend, the PID with the
getpid backend). ``--py-call-osafterfork`` calls ``PyOS_AfterFork_Child()`` in
each worker; ``--py-call-uwsgi-fork-hooks`` calls all three ``PyOS_*Fork*``
functions around the fork, as ``os.fork()`` does.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PostgresServer, RedisServer
from harness import (
    APPS,
    WORKERS,
    Process,
    app_env,
    assert_clean,
    check_round,
    check_rounds,
    free_port,
    get_concurrently,
    parents,
    pids_gone,
    port_open,
    unavailable,
    wait_until,
)


def _uwsgi() -> str:
    exe = shutil.which("uwsgi", path=os.path.dirname(sys.executable)) or shutil.which("uwsgi")
    if exe is None:
        unavailable("uWSGI is not installed (pip install uwsgi builds it; it needs a C compiler)")
    return exe


# uWSGI option per mode; "none" is uWSGI's default.
HOOKS = {"none": None, "osafterfork": "--py-call-osafterfork", "fork-hooks": "--py-call-uwsgi-fork-hooks"}


def _start(run_dir: Path, env: dict[str, str], hooks: str) -> tuple[Process, int]:
    port = free_port()
    argv = [_uwsgi(), "--master", "--processes", str(WORKERS), "--http-socket", f"127.0.0.1:{port}"]
    argv += ["--module", "probe:app", "--pythonpath", str(APPS), "--home", sys.prefix]
    argv += ["--need-app", "--strict", "--die-on-term", "--worker-reload-mercy", "20"]
    option = HOOKS[hooks]
    if option is not None:
        argv.append(option)
    server = Process(argv, log=run_dir / "uwsgi.log", env=env, cwd=run_dir)
    wait_until(lambda: port_open(port), timeout=60, what="uwsgi", proc=server)
    return server, port


@pytest.mark.parametrize("hooks", list(HOOKS))
def test_uwsgi_master_and_workers(
    backend: str,
    hooks: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    run_dir: Path,
    tag: str,
    figures: dict[str, Any],
) -> None:
    if hooks == "osafterfork" and sys.version_info >= (3, 13):
        # PyOS_AfterFork_Child() without PyOS_BeforeFork() aborts the worker on 3.13+.
        pytest.skip("uWSGI's --py-call-osafterfork kills every worker on Python 3.13+ (unbit/uwsgi#2710)")
    env = app_env(run_dir, backend=backend, tag=tag, redis_url=redis_server.url(), pg_dsn=postgres_server.dsn)
    server, port = _start(run_dir, env, hooks)
    try:
        first = get_concurrently(port, "1")
        live_redis = redis_server.clients(tag)
        live_pg = postgres_server.sessions(tag)
        second = get_concurrently(port, "2")
    finally:
        code = server.stop()
    records = parents(run_dir)
    assert list(records) == [server.pid], "the app was built once, in the master"
    # The getpid backend's blind spot (docs/servers.md): no Python hook ran at this fork.
    blind_spot = backend == "getpid" and hooks == "none"
    figures.update(check_round(first, records, backend=backend, tag=tag, blind_spot=blind_spot))
    check_rounds(first, second)
    for r in first:
        assert live_redis[f"{tag}-{r['pid']}"] == r["redis"][0]
        assert live_pg[f"{tag}-{r['pid']}"] == r["pg"][0]
    assert live_redis[f"{tag}-{server.pid}"] == records[server.pid]["redis"][0]
    figures["redis_clients_listed"] = len(live_redis)
    figures["pg_sessions_listed"] = len(live_pg)
    assert not server.killed and code == 0, f"uwsgi exited with {code}:\n{server.tail()}"
    assert pids_gone([r["pid"] for r in first]) == [], "workers outlived the master"
    assert_clean(server.output(), "uwsgi")


def test_uwsgi_getpid_blind_spot(
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    run_dir: Path,
    tag: str,
    figures: dict[str, Any],
) -> None:
    """What docs/servers.md says: with the getpid backend and no fork hooks, a view
    taken in the master shows the master's bytes in a worker until the library is called
    there; the Region API, and the same view after any library call, read zeros."""
    env = app_env(
        run_dir, backend="getpid", tag=tag, redis_url=redis_server.url(), pg_dsn=postgres_server.dsn
    )
    server, port = _start(run_dir, env, "none")
    try:
        first = get_concurrently(port, "1")
    finally:
        code = server.stop()
    master = parents(run_dir)[server.pid]
    assert {r["backend"] for r in first} == {"getpid"}
    assert [r["view_zero_first"] for r in first] == [False] * WORKERS
    assert all(r["secret_zero"] and r["view_zero_after"] for r in first)
    assert master["secret"] != bytes(32).hex()
    figures.update(
        workers=len(first), stale_views_before_first_call=sum(not r["view_zero_first"] for r in first)
    )
    assert code == 0
    assert_clean(server.output(), "uwsgi")
