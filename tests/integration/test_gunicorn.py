"""gunicorn --preload with 4 sync workers: the app (and its state) is built in the master."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from conftest import PostgresServer, RedisServer
from harness import (
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


def test_gunicorn_preload(
    backend: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    run_dir: Path,
    tag: str,
    figures: dict[str, Any],
) -> None:
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        unavailable("gunicorn is not installed")
    port = free_port()
    env = app_env(run_dir, backend=backend, tag=tag, redis_url=redis_server.url(), pg_dsn=postgres_server.dsn)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "sync",
    ]
    argv += ["--bind", f"127.0.0.1:{port}", "--timeout", "120", "--graceful-timeout", "20", "probe:app"]
    server = Process(argv, log=run_dir / "gunicorn.log", env=env, cwd=run_dir)
    try:
        wait_until(lambda: port_open(port), timeout=60, what="gunicorn", proc=server)
        first = get_concurrently(port, "1")
        live_redis = redis_server.clients(tag)
        live_pg = postgres_server.sessions(tag)
        second = get_concurrently(port, "2")
    finally:
        code = server.stop()
    records = parents(run_dir)
    assert list(records) == [server.pid], "the app was built once, in the master"
    figures.update(check_round(first, records, backend=backend, tag=tag))
    check_rounds(first, second)
    for r in first:  # the server itself sees one connection per worker, named after it
        assert live_redis[f"{tag}-{r['pid']}"] == r["redis"][0]
        assert live_pg[f"{tag}-{r['pid']}"] == r["pg"][0]
    assert live_redis[f"{tag}-{server.pid}"] == records[server.pid]["redis"][0]  # the master's own
    figures["redis_clients_listed"] = len(live_redis)
    figures["pg_sessions_listed"] = len(live_pg)
    assert not server.killed and code == 0, f"gunicorn exited with {code}:\n{server.tail()}"
    assert pids_gone([r["pid"] for r in first]) == [], "workers outlived the master"
    assert_clean(server.output(), "gunicorn")
