"""Processes and checks for the integration suite.

Servers and drivers run as child processes with their output in a log file;
they are stopped by PID (SIGTERM, then SIGKILL after a bounded wait). Every
wait here has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import pytest

APPS = Path(__file__).resolve().parent / "apps"
BACKENDS = ("default", "getpid")
WORKERS = 4
NUMPY_SEED = 20261202  # base seed of the reproducible per-worker numpy streams (INTEG_NUMPY_SEED)
# CI (.ci/run) sets this once it has installed the servers: then a missing one is a failure.
STRICT = os.environ.get("INHERIT_INTEGRATION_STRICT") == "1"
DIRTY = ("Exception ignored", "Traceback (most recent call last)")


def unavailable(reason: str) -> NoReturn:
    """Skip (or, in strict mode, fail) because something the test needs is missing."""
    if STRICT:
        pytest.fail(f"{reason} (INHERIT_INTEGRATION_STRICT=1)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A process this suite started: its output goes to ``log``; stopped by its PID."""

    def __init__(
        self, argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.argv = list(argv)
        self.log = log
        self.killed = False
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )
        self.pid = self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``; SIGKILL if still running after ``timeout`` seconds. Returns the exit code."""
        if self.running():
            self.popen.send_signal(sig)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.popen.kill()
        return self.popen.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc: Process | None = None) -> None:
    """Poll ``check`` until it holds; fail early if ``proc`` exits, and at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and not proc.running():
            raise RuntimeError(f"{what}: {proc.argv[0]} exited with {proc.popen.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            tail = f":\n{proc.tail()}" if proc is not None else ""
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s{tail}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def pids_gone(pids: Sequence[int], timeout: float = 15.0) -> list[int]:
    """Wait (bounded) for ``pids`` to exit; SIGKILL and return those that did not."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if _alive(pid)]
        if left:
            time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited; only its parent can reap it


def app_env(
    run_dir: Path,
    *,
    backend: str,
    tag: str,
    workers: int = WORKERS,
    redis_url: str | None = None,
    pg_dsn: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment for the probe application (tests/integration/apps/probe.py)."""
    # uWSGI reads UWSGI_* variables as options (tox sets UWSGI_PROFILE for building it).
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    env.pop("INHERIT_BACKEND", None)
    if backend == "getpid":
        env["INHERIT_BACKEND"] = "getpid"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS), env.get("PYTHONPATH", "")) if p)
    env.update(INTEG_DIR=str(run_dir), INTEG_N=str(workers), INTEG_TAG=tag, PYTHONUNBUFFERED="1")
    env["INTEG_NUMPY_SEED"] = str(NUMPY_SEED)
    env.pop("INTEG_REDIS_URL", None)
    env.pop("INTEG_PG_DSN", None)
    if redis_url is not None:
        env["INTEG_REDIS_URL"] = redis_url
    if pg_dsn is not None:
        env["INTEG_PG_DSN"] = pg_dsn
    env.update(extra)
    return env


def parents(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Every process that built the probe's state, by PID."""
    path = run_dir / "parents.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {int(r["pid"]): r for r in records}


def get_concurrently(
    port: int, round_name: str, n: int = WORKERS, timeout: float = 90.0
) -> list[dict[str, Any]]:
    """``n`` requests in flight at once; each waits at the barrier, so each lands on its own worker."""

    def one(_: int) -> dict[str, Any]:
        url = f"http://127.0.0.1:{port}/?round={round_name}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def expected_backend(backend: str, parent: dict[str, Any]) -> str:
    return "getpid" if backend == "getpid" else str(parent["backend"])


def check_round(
    reports: list[dict[str, Any]],
    parent_records: dict[int, dict[str, Any]],
    *,
    backend: str,
    tag: str,
    workers: int = WORKERS,
    inherited: bool = True,
    blind_spot: bool = False,
) -> dict[str, Any]:
    """Check one round of worker reports; return the figures.

    ``inherited``: the workers were forked from the process that built the
    probe's state (False for spawned workers, which built their own).
    ``blind_spot``: the getpid backend in a child whose fork ran no Python
    hook: a view taken in the parent may show the parent's bytes until the
    library is called there (docs/servers.md); it is not asserted here.
    """
    pids = [r["pid"] for r in reports]
    assert len(set(pids)) == workers, f"expected {workers} distinct workers, got pids {pids}"
    assert all(r["barrier"] for r in reports), "a worker timed out at the barrier"
    for r in reports:
        parent = parent_records[r["built_in"]]
        assert r["backend"] == expected_backend(backend, parent)
        assert r["hook_calls"] == r["hook_calls_end"]
        if inherited:
            assert r["built_in"] != r["pid"] and r["built_in"] == r["ppid"], r
            assert r["secret_zero"], f"worker {r['pid']} read the parent's secret through the Region API"
            assert r["view_zero_after"], f"worker {r['pid']} read the parent's secret through its view"
            if not blind_spot:
                assert r["view_zero_first"], f"worker {r['pid']}: the parent's view showed the parent's bytes"
            assert r["draws"] != parent["next_draws"], f"worker {r['pid']} drew the parent's stream"
            assert r["numpy_draws"] is None or r["numpy_draws"] != parent["next_numpy_draws"]
            assert r["generation"] != parent["generation"]
            assert r["hook_calls"] == [r["pid"]], f"after_fork ran {r['hook_calls']} in worker {r['pid']}"
        else:
            assert r["built_in"] == r["pid"], r
            assert r["hook_calls"] == [], f"after_fork ran in a process that was not forked: {r}"
        for service in ("redis", "pg"):
            if parent[service] is not None:
                ident, name = r[service]
                assert name == f"{tag}-{r['pid']}", f"{service} connection of {r['pid']} was made elsewhere"
                if inherited:
                    assert ident != parent[service][0], f"worker {r['pid']} uses the parent's {service}"
    streams = {tuple(r["draws"]) for r in reports}
    assert len(streams) == workers, "two workers drew the same stream"
    numpy_streams = {tuple(r["numpy_draws"]) for r in reports if r["numpy_draws"] is not None}
    assert len(numpy_streams) in (0, workers), "two workers drew the same numpy stream"
    figures: dict[str, Any] = {
        "workers": len(set(pids)),
        "streams": len(streams),
        "numpy_streams": len(numpy_streams),
        "generations": len({r["generation"] for r in reports}),
        "hooks": sorted(len(r["hook_calls"]) for r in reports),
        "backend": reports[0]["backend"],
    }
    for service in ("redis", "pg"):
        idents = [r[service][0] for r in reports if r[service] is not None]
        if idents:
            assert len(set(idents)) == workers, f"workers share a {service} connection: {idents}"
            figures[service] = len(set(idents))
    generations = [r["generation"] for r in reports]
    assert len(set(generations)) == workers, f"siblings share a generation: {generations}"
    if blind_spot:
        figures["stale_views_before_first_call"] = sum(not r["view_zero_first"] for r in reports)
    return figures


def check_rounds(
    first: list[dict[str, Any]], second: list[dict[str, Any]], *, inherited: bool = True
) -> None:
    """A second round reaches the same workers, with the same connections; nothing ran twice."""
    by_pid = {r["pid"]: r for r in first}
    assert set(by_pid) == {r["pid"] for r in second}, "the second round reached other workers"
    for r in second:
        before = by_pid[r["pid"]]
        assert r["generation"] == before["generation"], "generation() moved within a process"
        assert r["hook_calls_end"] == before["hook_calls_end"], "after_fork ran again in the same process"
        assert r["redis"] == before["redis"] and r["pg"] == before["pg"], "a worker changed connections"
        assert r["draws"] != before["draws"]
        if inherited:  # by now the library was called in the worker: every read shows zeros
            assert r["view_zero_first"] and r["secret_zero"]


def assert_clean(text: str, what: str) -> None:
    """No tracebacks, and nothing the interpreter reported as ignored, in ``what``'s output."""
    for marker in DIRTY:
        assert marker not in text, f"{what} printed {marker!r}:\n{text[-4000:]}"


def run_driver(
    args: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 180.0
) -> tuple[dict[str, Any], str]:
    """Run apps/driver.py; return its JSON answer and its stderr (checked clean by the caller)."""
    proc = subprocess.run(
        [sys.executable, str(APPS / "driver.py"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"driver {args} exited with {proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout), proc.stderr


def check_forks(
    service: str, answer: dict[str, Any], run_dir: Path, tag: str, backend: str
) -> dict[str, Any]:
    """Check apps/driver.py's ``fork`` answer for ``service`` ("redis" or "pg"); return the figures."""
    from inherit.testing import available_routes

    records = parents(run_dir)
    driver = answer["pid"]
    parent = records[driver]
    children = answer["children"]
    assert [c["route"] for c in children] == [
        r for r in available_routes() for _ in range(answer["per_route"])
    ]
    for c in children:
        # Python's at-fork hooks run only on these routes; elsewhere the getpid backend has its blind spot.
        if backend != "getpid" or c["route"] in ("os.fork", "multiprocessing"):
            assert c["view_zero_first"], f"{c['route']}: the parent's view showed the parent's bytes"
        assert c["built_in"] == driver and c["pid"] != driver
        assert c["backend"] == ("getpid" if backend == "getpid" else parent["backend"])
        ident, name = c[service]
        assert name == f"{tag}-{c['pid']}", f"{c['route']}: the connection was not made in the child"
        assert ident != parent[service][0], f"{c['route']}: the child used the parent's connection"
        assert c["secret_zero"] and c["view_zero_after"]
        assert c["hook_calls"] == [c["pid"]], f"{c['route']}: after_fork ran {c['hook_calls']}"
        assert c["draws"] != parent["next_draws"], f"{c['route']}: the child drew the parent's stream"
        assert c["numpy_draws"] is None or c["numpy_draws"] != parent["next_numpy_draws"]
        assert c["generation"] != parent["generation"]
    idents = [c[service][0] for c in children]
    streams = {tuple(c["draws"]) for c in children}
    numpy_streams = {tuple(c["numpy_draws"]) for c in children if c["numpy_draws"] is not None}
    assert len(numpy_streams) in (0, len(children)), "two children drew the same numpy stream"
    generations = {c["generation"] for c in children}
    assert len(set(idents)) == len(children), f"children share {service} connections: {idents}"
    assert len(streams) == len(children), "two children drew the same stream"
    assert len(generations) == len(children), "two children share a generation"
    # The parent's own connection is intact: the children dropped theirs without closing it.
    assert answer["before"][service] == answer["after"][service] == parent[service]
    assert answer["shared"][service] == parent[service][0], "control: a plain shared client is the parent's"
    return {
        "routes": len(available_routes()),
        "children": len(children),
        "connections": len(set(idents)),
        "streams": len(streams),
        "numpy_streams": len(numpy_streams),
        "generations": len(generations),
        "hooks": sorted({len(c["hook_calls"]) for c in children}),
        "backend": children[0]["backend"],
        "stale_views_before_first_call": sum(not c["view_zero_first"] for c in children),
    }
