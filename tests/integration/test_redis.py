"""redis-py against redis-server: a single-connection client in a ForkLocal, forked by every route.

redis-py's pool checks ``os.getpid()``, but a ``single_connection_client``
holds one connection with no check. In a ForkLocal, each child (``os.fork``,
multiprocessing, ``fork()`` from C, raw ``fork``/``clone``) opens its own; the
parent's connection survives them all. A control child that uses the parent's
client directly shows the bug the ForkLocal prevents: it gets the parent's
connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import RedisServer
from harness import app_env, assert_clean, check_forks, run_driver, wait_until


def test_redis_py_forklocal_every_route(
    backend: str, redis_server: RedisServer, run_dir: Path, tag: str, figures: dict[str, Any]
) -> None:
    env = app_env(run_dir, backend=backend, tag=tag, workers=1, redis_url=redis_server.url())
    answer, stderr = run_driver(["fork"], env, run_dir)
    figures.update(check_forks("redis", answer, run_dir, tag, backend))
    # Every process that made a connection has exited: the server drops them all.
    wait_until(lambda: redis_server.clients(tag) == {}, timeout=30, what="redis connections closed")
    assert_clean(stderr, "the fork driver")
