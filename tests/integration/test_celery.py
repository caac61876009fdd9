"""A Celery prefork worker (4 pool processes) on a Redis broker.

The main worker process imports the app, and with it the probe's state, then
forks the pool; each task answers from the pool process that ran it.
"""

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
    parents,
    pids_gone,
    unavailable,
    wait_until,
)

BROKER_DB, RESULT_DB = 1, 2


def _round(client: Any, worker: Process, name: str) -> list[dict[str, Any]]:
    """Send ``WORKERS`` tasks at once; poll their results (a plain GET each, no subscription)."""
    results = [client.send_task("integ.report", args=[name]) for _ in range(WORKERS)]
    wait_until(lambda: all(r.ready() for r in results), timeout=90, what="celery tasks", proc=worker)
    failed = [r.traceback for r in results if not r.successful()]
    assert not failed, f"tasks failed:\n{failed}"
    return [dict(r.result) for r in results]


def test_celery_prefork(
    backend: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    run_dir: Path,
    tag: str,
    figures: dict[str, Any],
) -> None:
    try:
        from celery import Celery
    except ImportError:
        unavailable("celery is not installed")
    for db in (BROKER_DB, RESULT_DB):
        with redis_server.client(db) as r:
            r.flushdb()
    broker, results = redis_server.url(BROKER_DB), redis_server.url(RESULT_DB)
    env = app_env(
        run_dir,
        backend=backend,
        tag=tag,
        redis_url=redis_server.url(),
        pg_dsn=postgres_server.dsn,
        INTEG_BROKER_URL=broker,
        INTEG_RESULT_URL=results,
    )
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork"]
    argv += [
        "--concurrency",
        str(WORKERS),
        "-O",
        "fair",
        "--loglevel",
        "INFO",
        "--hostname",
        f"{tag}@127.0.0.1",
    ]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = Process(argv, log=run_dir / "celery.log", env=env, cwd=run_dir)
    client = Celery("integ-client", broker=broker, backend=results)
    try:
        first = _round(client, worker, "1")
        live_redis = redis_server.clients(tag)
        live_pg = postgres_server.sessions(tag)
        second = _round(client, worker, "2")
    finally:
        client.close()
        code = worker.stop(timeout=60)
    records = parents(run_dir)
    assert list(records) == [worker.pid], "the app was built once, in the main worker process"
    figures.update(check_round(first, records, backend=backend, tag=tag))
    check_rounds(first, second)
    for r in first:
        assert live_redis[f"{tag}-{r['pid']}"] == r["redis"][0]
        assert live_pg[f"{tag}-{r['pid']}"] == r["pg"][0]
    figures["redis_clients_listed"] = len(live_redis)
    figures["pg_sessions_listed"] = len(live_pg)
    assert not worker.killed and code == 0, f"celery exited with {code}:\n{worker.tail()}"
    assert pids_gone([r["pid"] for r in first]) == [], "pool processes outlived the worker"
    assert_clean(worker.output(), "celery")
