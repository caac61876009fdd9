"""``after_fork`` callbacks run exactly once in every new process, whatever happens in one.

One that raises an ``Exception`` is reported and the rest still run. A signal
handler's exception (KeyboardInterrupt, a SIGTERM handler's SystemExit, an alarm
timeout) inside one must not stop the others either: the process is already
settled, so a callback skipped then would never run there, and a worker would keep
the parent's connections. And a callback that forks (to start a helper process)
must not make the callbacks after it run twice in the helper, which ran every
callback through its own detection.
"""

from __future__ import annotations

import json
import signal
import sys

import pytest

from support import run_case

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer"),
    pytest.mark.parametrize("backend", ["", "getpid"], ids=["default-backend", "getpid-backend"]),
]

CASE = r"""
import signal, time

class Interrupt(BaseException):
    pass

def on_alarm(signum, frame):
    raise Interrupt

signal.signal(signal.SIGALRM, on_alarm)
ran = []

@inherit.after_fork
def slow_first():
    ran.append("first")
    signal.setitimer(signal.ITIMER_REAL, 0.01)  # the signal lands while this callback runs
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        pass

@inherit.after_fork
def reconnect():
    ran.append("reconnect")

def child():
    try:
        inherit.generation()  # raw routes: detection (and the callbacks) happen here
    except Interrupt:
        pass
    signal.setitimer(signal.ITIMER_REAL, 0)
    for _ in range(3):  # later calls, as the worker goes on
        inherit.generation()
        inherit.zero_on_fork(16).close()
    return ran

for route in ROUTES:
    ran.clear()
    out[route] = run_in_child(child, route=route, timeout=30)
"""


def test_an_interrupted_callback_does_not_cancel_the_later_ones(backend: str) -> None:
    out = run_case(CASE, env={"INHERIT_BACKEND": backend}, timeout=120)
    assert out, "no route ran"
    assert all(ran[:1] == ["first"] for ran in out.values()), out
    missed = {route: ran for route, ran in out.items() if ran.count("reconnect") != 1}
    assert not missed, f"reconnect did not run exactly once: {missed}"


FORKING_CALLBACK = r"""
read_end, write_end = os.pipe()
spawned = []

@inherit.after_fork
def start_helper():  # starts a helper process of its own, as sidecar-starting code does
    if not spawned:
        spawned.append(os.getpid())
        pid = os.fork()
        if pid:
            os.waitpid(pid, 0)

counts = {}

@inherit.after_fork
def reconnect():
    counts[os.getpid()] = counts.get(os.getpid(), 0) + 1
    os.write(write_end, (json.dumps([os.getpid(), counts[os.getpid()]]) + "\n").encode())

def child():
    inherit.generation()
    return os.getpid()

out["child"] = run_in_child(child, route="libc.fork", timeout=30)
os.close(write_end)
data = b""
while True:
    chunk = os.read(read_end, 65536)
    if not chunk:
        break
    data += chunk
runs = {}
for line in data.decode().splitlines():
    pid, count = json.loads(line)
    runs[str(pid)] = max(runs.get(str(pid), 0), count)
out["runs"] = runs
"""


def test_a_process_forked_from_a_callback_runs_each_callback_once(backend: str) -> None:
    out = run_case(FORKING_CALLBACK, env={"INHERIT_BACKEND": backend}, timeout=120)
    assert len(out["runs"]) == 2, f"expected the child and its helper: {out}"
    assert all(count == 1 for count in out["runs"].values()), f"reconnect ran more than once: {out['runs']}"


EARLIER_HOOK = r"""
import json, os, sys
early = []
# Registered before inherit is imported, so os.fork() runs it before the library's own
# after-fork hook: the library is used in the child before that hook runs (as any hook,
# or a finalizer run by one, can do).
os.register_at_fork(after_in_child=lambda: early.append(sys.modules["inherit"].generation()))
import inherit
from inherit.testing import run_in_child

inits, calls = [], []

class Conn(inherit.ForkLocal):
    def __init__(self):
        inits.append(os.getpid())
        self.ident = os.urandom(4).hex()

conn = Conn()
inherit.after_fork(lambda: calls.append(os.getpid()))
parent = inherit.generation()

def child():
    ident = conn.ident
    return {"early": early, "now": inherit.generation(), "parent": parent, "callbacks": len(calls),
            "inits": inits.count(os.getpid()), "stable": conn.ident == ident}

print("RESULT " + json.dumps(run_in_child(child, route=ROUTE, timeout=30)))
"""


@pytest.mark.parametrize("route", ["os.fork", "multiprocessing"])
def test_a_child_that_used_the_library_before_its_fork_hook_is_one_new_process(
    backend: str, route: str
) -> None:
    from support import run_python

    proc = run_python(EARLIER_HOOK.replace("ROUTE", repr(route)), env={"INHERIT_BACKEND": backend})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["early"] and out["early"][0] != out["parent"], out
    assert out["early"] == [out["now"]], f"the generation moved twice in one child: {out}"
    assert out["callbacks"] == 1 and out["inits"] == 1 and out["stable"], out


AFTER_FORK_CHILD_ONLY = r"""
import ctypes, json, os
import inherit
# What uWSGI does with --py-call-osafterfork: fork() from C, then only the child half of
# Python's fork protocol (PyOS_AfterFork_Child), without PyOS_BeforeFork in the parent.
libc = ctypes.CDLL(None, use_errno=True)
region = inherit.zero_on_fork(32)
region[:] = b"\x5a" * 32
view = region.view()
calls = []
inherit.after_fork(lambda: calls.append(1))
parent = inherit.generation()
read_end, write_end = os.pipe()
pid = libc.fork()
if pid == 0:
    ctypes.pythonapi.PyOS_AfterFork_Child()
    first_look = bytes(view) == bytes(32)  # before any library call: the hook must have run
    report = {"view_zero": first_look, "callbacks": len(calls), "moved": inherit.generation() != parent}
    os.write(write_end, json.dumps(report).encode())
    os._exit(0)
os.close(write_end)
data = os.read(read_end, 4096)
os.waitpid(pid, 0)
print("RESULT " + data.decode())
"""


@pytest.mark.skipif(
    sys.version_info >= (3, 13),
    reason="PyOS_AfterFork_Child after a fork from C kills the child on 3.13+, as uWSGI's "
    "--py-call-osafterfork does (unbit/uwsgi#2710)",
)
def test_a_fork_that_runs_only_the_child_hook_is_settled_by_it(backend: str) -> None:
    from support import run_python

    proc = run_python(AFTER_FORK_CHILD_ONLY, env={"INHERIT_BACKEND": backend})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out == {"view_zero": True, "callbacks": 1, "moved": True}, out
