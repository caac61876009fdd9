"""Parents for the integration tests that fork from Python: multiprocessing pools and plain forks.

``driver.py mp CONTEXT pool|executor`` runs ``N`` pool workers twice through
the barrier; ``driver.py fork`` forks four children, one at a time, by every
route :mod:`inherit.testing` offers (run it with ``INTEG_N=1``). Either prints one JSON document on stdout.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import probe

import inherit
from inherit.testing import available_routes, run_in_child

FORK_CHILDREN = 4  # per route, one after another


def pool_task(
    round_name: str,
    rng: inherit.Random,
    redis_conn: probe.RedisConnection,
    pg_conn: probe.PgConnection,
    seeded: Any,
) -> dict[str, Any]:
    """Run in a pool worker. The arguments arrive pickled, whatever the context: the Random
    starts a fresh stream, and the ForkLocals (``pickle="init"``, as inherit.numpy.Generator
    is) are rebuilt here from their arguments."""

    def extra() -> dict[str, Any]:
        return {
            "arg_draws": [rng.getrandbits(64) for _ in range(probe.DRAWS)],
            "arg_redis": probe.redis_identity(redis_conn),
            "arg_pg": probe.pg_identity(pg_conn),
            "arg_numpy_draws": probe.numpy_draws(seeded),
        }

    return probe.report(round_name, extra)


def run_mp(context: str, kind: str) -> dict[str, Any]:
    ctx = multiprocessing.get_context(None if context == "default" else context)
    method = ctx.get_start_method()
    if method == "forkserver":
        ctx.set_forkserver_preload(["probe"])  # the forkserver builds the state its children inherit
    rounds: list[list[dict[str, Any]]] = []
    seeded = None
    if probe.numpy is not None:
        # Reproducible per worker: the key (the worker's PID) is read where the generator is built.
        seeded = probe.NumpyGenerator(probe.NUMPY_SEED, worker_key=os.getpid)
    args = (probe.RNG, probe.REDIS, probe.PG, seeded)
    if kind == "pool":
        pool = ctx.Pool(probe.N)
        try:
            for name in ("1", "2"):
                results = [pool.apply_async(pool_task, (name, *args)) for _ in range(probe.N)]
                rounds.append([r.get(timeout=60) for r in results])
        finally:
            pool.close()
            pool.join()
    else:
        with ProcessPoolExecutor(probe.N, mp_context=ctx) as executor:
            for name in ("1", "2"):
                futures = [executor.submit(pool_task, name, *args) for _ in range(probe.N)]
                rounds.append([f.result(timeout=60) for f in futures])
    return {"method": method, "rounds": rounds, "parent_next": probe._next_draws(probe.RNG)}


def _forked(route: str) -> dict[str, Any]:
    return {"route": route, **probe.report(f"fork-{route}")}


def _shared(redis_client: Any, pg_conn: Any) -> dict[str, Any]:
    """A control: the parent's connection objects used as they are, with no ForkLocal."""
    answer: dict[str, Any] = {}
    if redis_client is not None:
        answer["redis"] = int(redis_client.client_id())
    if pg_conn is not None:
        row = pg_conn.execute("select pg_backend_pid()").fetchone()
        answer["pg"] = None if row is None else int(row[0])
    return answer


def run_fork() -> dict[str, Any]:
    """``N`` children per route, one at a time; the parent's connections must survive them all."""
    before = {"redis": probe.redis_identity(), "pg": probe.pg_identity()}
    children = [
        run_in_child(_forked, route, route=route, timeout=60)
        for route in available_routes()
        for _ in range(FORK_CHILDREN)
    ]
    # The parent's own client and connection objects, used as they are (not through the ForkLocals).
    shared = run_in_child(
        _shared,
        None if probe.REDIS is None else probe.REDIS.client,
        None if probe.PG is None else probe.PG.conn,
        timeout=60,
    )
    after = {"redis": probe.redis_identity(), "pg": probe.pg_identity()}
    return {
        "children": children,
        "per_route": FORK_CHILDREN,
        "shared": shared,
        "before": before,
        "after": after,
    }


def main() -> None:
    if sys.argv[1] == "mp":
        result = run_mp(sys.argv[2], sys.argv[3])
    else:
        result = run_fork()
    result["pid"] = os.getpid()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
