"""The application every integration test runs: built once in the parent, asked in each worker.

At import (gunicorn's ``--preload``, uWSGI's master, Celery's main process, a
multiprocessing parent or forkserver) it builds the per-process state a real
application keeps: an ``inherit.Random``, a zero-on-fork region filled with a
secret and a memoryview of it, Redis and PostgreSQL connections in ForkLocals,
and an ``after_fork`` hook. It appends what the parent holds to
``$INTEG_DIR/parents.jsonl``; :func:`report` returns what a worker sees.
Where numpy is installed it adds an ``inherit.numpy.Generator``.

Configured by the environment: ``INTEG_DIR``, ``INTEG_N`` (workers to wait
for), ``INTEG_TAG`` (prefix of connection names), ``INTEG_NUMPY_SEED``, and optionally
``INTEG_REDIS_URL`` and ``INTEG_PG_DSN``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import inherit

DIR = os.environ["INTEG_DIR"]
N = int(os.environ["INTEG_N"])
TAG = os.environ["INTEG_TAG"]
REDIS_URL = os.environ.get("INTEG_REDIS_URL")
PG_DSN = os.environ.get("INTEG_PG_DSN")
BARRIER_TIMEOUT = 30.0
DRAWS = 4
NUMPY_SEED = int(os.environ.get("INTEG_NUMPY_SEED", "0"))  # base of the reproducible per-worker streams

BUILT_IN = os.getpid()  # the process that ran this import: where the state below was made
HOOK_CALLS: list[int] = []  # pids the after_fork hook ran in; empty in the process that built it


@inherit.after_fork
def _count_new_process() -> None:
    HOOK_CALLS.append(os.getpid())


class RedisConnection(inherit.ForkLocal, pickle="init"):
    """One Redis connection per process (redis-py does not guard a single-connection client).

    Pickled (to a spawn or forkserver worker, say), it is rebuilt from its URL there.
    """

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, single_connection_client=True, client_name=f"{TAG}-{os.getpid()}", socket_timeout=30
        )


class PgConnection(inherit.ForkLocal, pickle="init"):
    """One PostgreSQL session per process; rebuilt from its DSN when unpickled."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True, application_name=f"{TAG}-{os.getpid()}")


RNG = inherit.Random()
RNG.random()  # the parent uses its stream before forking, as applications do
try:
    import numpy
except ImportError:  # numpy is optional: its checks are left out
    numpy = None
if numpy is not None:
    from inherit.numpy import Generator as NumpyGenerator

    NUMPY_RNG: Any = NumpyGenerator()  # fresh OS entropy in every process
    NUMPY_RNG.random()
else:
    NUMPY_RNG = None
SECRET = inherit.zero_on_fork(32, secret=True)
SECRET[:] = os.urandom(32)
VIEW = SECRET.view()  # taken in the parent and kept, as a long-lived buffer consumer would
REDIS = RedisConnection(REDIS_URL) if REDIS_URL else None
PG = PgConnection(PG_DSN) if PG_DSN else None


def _next_draws(rng: random.Random) -> list[int]:
    """The draws ``rng`` would give next, without moving it."""
    mirror = random.Random()
    mirror.setstate(rng.getstate())
    return [mirror.getrandbits(64) for _ in range(DRAWS)]


def numpy_draws(gen: Any, *, peek: bool = False) -> list[int] | None:
    """``DRAWS`` integers from ``gen`` (an inherit.numpy.Generator); with ``peek``, without moving it."""
    if gen is None:
        return None
    if peek:
        bit_generator = type(gen.generator.bit_generator)()
        bit_generator.state = gen.generator.bit_generator.state
        gen = numpy.random.Generator(bit_generator)
    return [int(x) for x in gen.integers(2**63, size=DRAWS)]


def redis_identity(conn: RedisConnection | None = None) -> tuple[int, str] | None:
    """(``CLIENT ID``, ``CLIENT GETNAME``) of ``conn``, by default this module's connection."""
    conn = conn or REDIS
    if conn is None:
        return None
    client = conn.client
    return int(client.client_id()), str(client.client_getname())


def pg_identity(conn: PgConnection | None = None) -> tuple[int, str] | None:
    """(``pg_backend_pid()``, ``application_name``) of ``conn``, by default this module's session."""
    conn = conn or PG
    if conn is None:
        return None
    row = conn.conn.execute("select pg_backend_pid(), current_setting('application_name')").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _append(path: str, record: dict[str, Any]) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of a short line: O_APPEND keeps lines whole
    finally:
        os.close(fd)


_append(
    os.path.join(DIR, "parents.jsonl"),
    {
        "pid": BUILT_IN,
        "generation": inherit.generation(),
        "backend": inherit.backend(),
        "next_draws": _next_draws(RNG),
        "next_numpy_draws": numpy_draws(NUMPY_RNG, peek=True),
        "secret": bytes(SECRET).hex(),
        "redis": redis_identity(),
        "pg": pg_identity(),
    },
)


def barrier(name: str) -> bool:
    """Hold this worker until ``N`` distinct processes reached ``name`` (bounded).

    A busy worker takes no new request or task, so ``N`` concurrent requests
    that each wait here land on ``N`` different workers.
    """
    path = os.path.join(DIR, f"barrier-{name}")
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, str(os.getpid())), "w").close()
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while time.monotonic() < deadline:
        if len(os.listdir(path)) >= N:
            return True
        time.sleep(0.02)
    return False


def report(round_name: str, extra: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """What this worker sees of the parent's state; waits at the barrier ``round_name``."""
    # First, before this request calls the library: the parent's view, read directly.
    view_zero_first = not any(VIEW)
    secret_zero = bytes(SECRET) == bytes(len(SECRET))  # through the Region API
    view_zero_after = not any(VIEW)
    answer: dict[str, Any] = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "built_in": BUILT_IN,
        "backend": inherit.backend(),
        "generation": inherit.generation(),
        "view_zero_first": view_zero_first,
        "secret_zero": secret_zero,
        "view_zero_after": view_zero_after,
        "draws": [RNG.getrandbits(64) for _ in range(DRAWS)],
        "numpy_draws": numpy_draws(NUMPY_RNG),
        "redis": redis_identity(),
        "pg": pg_identity(),
        "hook_calls": list(HOOK_CALLS),
    }
    if extra is not None:
        answer.update(extra())
    answer["barrier"] = barrier(round_name)
    answer["hook_calls_end"] = list(HOOK_CALLS)
    return answer


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI: ``GET /?round=NAME`` answers :func:`report` as JSON."""
    from urllib.parse import parse_qs

    round_name = parse_qs(environ.get("QUERY_STRING", "")).get("round", ["1"])[0]
    body = json.dumps(report(round_name)).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
