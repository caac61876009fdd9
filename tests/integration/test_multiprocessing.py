"""multiprocessing Pool in the fork, forkserver and spawn contexts, and ProcessPoolExecutor.

The parent (apps/driver.py) builds the probe's state, then runs 4 workers twice
through the barrier. fork workers inherit the parent's state; forkserver
workers inherit the forkserver's (it preloads the probe); spawn workers build
their own. In every context the parent's ``inherit.Random``, passed to the
task, arrives pickled and must start a fresh stream; its ForkLocal connections
(declared ``pickle="init"``) arrive pickled and are rebuilt in the worker.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from conftest import PostgresServer, RedisServer
from harness import NUMPY_SEED, WORKERS, app_env, assert_clean, check_round, check_rounds, parents, run_driver

CONTEXTS = ["fork", "forkserver", "spawn"]


def _run(
    kind: str,
    context: str,
    backend: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    run_dir: Path,
    tag: str,
    figures: dict[str, Any],
) -> None:
    env = app_env(run_dir, backend=backend, tag=tag, redis_url=redis_server.url(), pg_dsn=postgres_server.dsn)
    answer, stderr = run_driver(["mp", context, kind], env, run_dir)
    records = parents(run_dir)
    method = answer["method"]
    first, second = answer["rounds"]
    driver = answer["pid"]
    inherited = method != "spawn"
    figures.update(method=method)
    figures.update(check_round(first, records, backend=backend, tag=tag, inherited=inherited))
    check_rounds(first, second, inherited=inherited)
    for r in first:
        if method == "fork":
            assert r["built_in"] == driver, "fork workers inherit the driver's state"
        elif method == "forkserver":
            assert r["built_in"] not in (driver, r["pid"]), (
                "forkserver workers inherit the forkserver's state"
            )
    # The driver's Random, pickled to each task: a fresh stream in every worker, never the driver's.
    arg_streams = {tuple(r["arg_draws"]) for r in first + second}
    assert len(arg_streams) == 2 * WORKERS
    assert tuple(answer["parent_next"]) not in arg_streams
    figures["pickled_rng_streams"] = len(arg_streams)
    # The driver's ForkLocal connections, pickled with each task: rebuilt in the worker from their
    # arguments, so each task got a new connection of the worker's own.
    parent = records[driver]
    for service in ("redis", "pg"):
        seen = [r[f"arg_{service}"] for r in first + second]
        for r, (ident, name) in zip(first + second, seen, strict=True):
            assert name == f"{tag}-{r['pid']}", f"a pickled {service} ForkLocal was not rebuilt in the worker"
            assert ident not in (parent[service][0], r[service][0])
        assert len({ident for ident, _ in seen}) == 2 * WORKERS
        figures[f"pickled_{service}_connections"] = len({ident for ident, _ in seen})
    # An inherit.numpy.Generator with a base seed and worker_key=os.getpid, pickled with each task:
    # rebuilt in the worker with the worker's key, so the stream is the one that key always gives.
    if first[0]["arg_numpy_draws"] is not None:
        from inherit.numpy import Generator

        for r in first + second:
            drawn = Generator(NUMPY_SEED, worker_key=r["pid"]).integers(2**63, size=len(r["arg_numpy_draws"]))
            expected = [int(x) for x in drawn]
            assert r["arg_numpy_draws"] == expected, "a pickled numpy Generator lost its worker key"
        figures["seeded_numpy_streams"] = len({tuple(r["arg_numpy_draws"]) for r in first + second})
        assert figures["seeded_numpy_streams"] == WORKERS
    assert_clean(stderr, f"the {kind} driver")


@pytest.mark.parametrize("context", CONTEXTS)
def test_pool(
    context: str,
    backend: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    run_dir: Path,
    tag: str,
    figures: dict[str, Any],
) -> None:
    _run("pool", context, backend, redis_server, postgres_server, run_dir, tag, figures)


# "default": whatever this Python picks (fork up to 3.13 on Linux, forkserver from 3.14).
@pytest.mark.parametrize("context", ["default", *CONTEXTS])
def test_process_pool_executor(
    context: str,
    backend: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    run_dir: Path,
    tag: str,
    figures: dict[str, Any],
) -> None:
    if context == "default":
        figures["default_method"] = multiprocessing.get_start_method()
    _run("executor", context, backend, redis_server, postgres_server, run_dir, tag, figures)
