"""psycopg 3 against PostgreSQL: a connection in a ForkLocal, forked by every route.

Each child (``os.fork``, multiprocessing, ``fork()`` from C, raw
``fork``/``clone``) opens its own session (its own ``pg_backend_pid()``,
named after the child); dropping the parent's connection object in the child
does not end the parent's session. A control child that uses the parent's
connection directly gets the parent's backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import PostgresServer
from harness import app_env, assert_clean, check_forks, run_driver, wait_until


def test_psycopg_forklocal_every_route(
    backend: str, postgres_server: PostgresServer, run_dir: Path, tag: str, figures: dict[str, Any]
) -> None:
    env = app_env(run_dir, backend=backend, tag=tag, workers=1, pg_dsn=postgres_server.dsn)
    answer, stderr = run_driver(["fork"], env, run_dir)
    figures.update(check_forks("pg", answer, run_dir, tag, backend))
    wait_until(lambda: postgres_server.sessions(tag) == {}, timeout=30, what="postgres sessions closed")
    assert_clean(stderr, "the fork driver")
