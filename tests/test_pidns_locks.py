"""The process lock when a child gets its parent's PID (PID 1 forking into a new namespace).

Locks are keyed by the PID and by a word in the flag page that reads zero in
every child, so a child with its parent's PID must still not find the parent's
lock: if another thread held it at the fork (it was settling a fork or updating
the slab's books), the child would wait for ever, for ``os.fork()`` inside the
at-fork hook, before ``os.fork()`` even returns. The other thread is held inside
detection by slowing one step down, as tests/test_reentrance.py does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from inherit.testing import available_routes

pytestmark = [pytest.mark.linux, pytest.mark.root]

SCRIPT = r"""
import ctypes, json, os, sys, threading, time
import inherit
from inherit import _runtime
from inherit.testing import run_in_child

route = sys.argv[1]
inherit.generation()
# Another thread settles a new process and is inside the lock when this one forks.
real = _runtime._fresh_generation
entered = threading.Event()
def slow(old):
    entered.set()
    time.sleep(2)
    return real(old)
_runtime._fresh_generation = slow
if _runtime.kernel_wipes:
    _runtime.flag[0] = 0
else:
    _runtime.pid_of_record = -1
thread = threading.Thread(target=inherit.generation)
thread.start()  # before unshare: no new thread can start until the namespace has its first process
entered.wait(10)
_runtime._fresh_generation = real
if hasattr(os, "unshare"):  # Python 3.12+
    os.unshare(os.CLONE_NEWPID)
elif ctypes.CDLL(None, use_errno=True).unshare(0x20000000) != 0:
    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWPID)")
try:
    answer = run_in_child(lambda: [os.getpid(), inherit.generation() != 0], route=route, timeout=4)
except Exception as exc:
    answer = f"{type(exc).__name__}: {exc}"
thread.join()
print(json.dumps({"pid": os.getpid(), "child": answer}))
"""


@pytest.mark.parametrize("route", ["os.fork", "libc.fork"])
def test_a_child_with_its_parents_pid_does_not_wait_for_a_vanished_thread(route: str) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("the unshare(1) command (util-linux) is not installed")
    if route not in available_routes():
        pytest.skip(f"route {route} is not available on this machine")
    env = {k: v for k, v in os.environ.items() if k != "INHERIT_BACKEND"}
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
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pid"] == 1, result
    assert result["child"] == [1, True], result
