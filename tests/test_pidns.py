"""A child with its parent's PID: PID 1 forking into a new PID namespace.

``unshare --pid --fork --mount-proc`` makes Python PID 1 of a fresh namespace; Python then
calls unshare(CLONE_NEWPID) itself, so its first child is PID 1 of another namespace. Parent
and child both see ``os.getpid() == 1``. The madvise backend still catches the fork (the
kernel wipes the page); the getpid backend catches it only through os.fork()'s at-fork hook,
as its documentation says, and this test holds the documentation to that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from inherit.testing import available_routes

pytestmark = [pytest.mark.linux, pytest.mark.root]

ROUTES = ["os.fork", "libc.fork", "syscall.fork"]
PATTERN_HEX = "5a" * 32

# Runs as PID 1 of a new namespace; prints one JSON line for the test to check.
SCRIPT = r"""
import ctypes, errno, json, os, sys

import inherit
from inherit.testing import run_in_child

route = sys.argv[1]
try:
    backend = inherit.backend()  # select now: no verification fork may land in the new namespace
    info = inherit.diagnostics()
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
r = inherit.zero_on_fork(32)
r[:] = b"\x5a" * 32
generation = inherit.generation()

CLONE_NEWPID = 0x20000000
try:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(os.CLONE_NEWPID)
    else:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWPID) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
except OSError as exc:
    print(json.dumps({"unshare_errno": errno.errorcode.get(exc.errno, str(exc.errno))}))
    sys.exit(0)


def child():
    return {"pid": os.getpid(), "bytes": bytes(r).hex(), "generation": inherit.generation()}


answer = run_in_child(child, route=route, timeout=20)
print(json.dumps({
    "backend": backend,
    "reason": info.get("reason"),
    "parent_pid": os.getpid(),
    "parent_generation": generation,
    "parent_generation_after": inherit.generation(),
    "parent_bytes": bytes(r).hex(),
    "child": answer,
}))
"""


def _run_as_pid1(route: str, backend_env: str) -> dict[str, Any]:
    """Run SCRIPT as PID 1 of a new PID namespace; skip where namespaces are not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("the unshare(1) command (util-linux) is not installed")
    if route not in available_routes():
        pytest.skip(f"route {route} is not available on this machine")
    env = dict(os.environ)
    env.pop("INHERIT_BACKEND", None)
    if backend_env:
        env["INHERIT_BACKEND"] = backend_env
    proc = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", SCRIPT, route],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip(f"PID namespaces are not permitted here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("unshare_errno") == "EPERM":
        pytest.skip("unshare(CLONE_NEWPID) is not permitted inside the namespace")
    assert "error" not in result and "unshare_errno" not in result, result
    # The premise: both processes really have PID 1.
    assert result["parent_pid"] == 1, result
    assert result["child"]["pid"] == 1, result
    return result


@pytest.mark.parametrize("route", ROUTES)
def test_madvise_catches_child_with_same_pid(route: str) -> None:
    result = _run_as_pid1(route, "")
    if result["backend"] != "madvise":
        pytest.skip(f"the default backend here is {result['backend']!r} ({result['reason']})")
    child = result["child"]
    assert child["bytes"] == "00" * 32
    assert child["generation"] != result["parent_generation"]
    assert result["parent_bytes"] == PATTERN_HEX
    assert result["parent_generation_after"] == result["parent_generation"]


@pytest.mark.parametrize("route", [r for r in ROUTES if r != "os.fork"])
def test_getpid_backend_misses_child_with_same_pid(route: str) -> None:
    """The documented blind spot of the getpid backend: same PID, no hook, so no fork noticed.

    If this starts failing because the fallback learned to catch it, update the documentation.
    """
    result = _run_as_pid1(route, "getpid")
    assert result["backend"] == "getpid"
    child = result["child"]
    assert child["bytes"] == PATTERN_HEX, "blind spot closed? update the getpid documentation"
    assert child["generation"] == result["parent_generation"]
    assert result["parent_bytes"] == PATTERN_HEX


def test_getpid_backend_catches_os_fork_child_with_same_pid() -> None:
    """os.fork() runs the at-fork hook, which wipes whatever the PIDs say."""
    result = _run_as_pid1("os.fork", "getpid")
    assert result["backend"] == "getpid"
    child = result["child"]
    assert child["bytes"] == "00" * 32
    assert child["generation"] != result["parent_generation"]
    assert result["parent_bytes"] == PATTERN_HEX
