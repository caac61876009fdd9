"""Finalizers and signal handlers that strike while the library chooses a backend or settles a fork.

Both run user code at arbitrary instants. The promise: a finalizer that calls the
library while a fork is being detected sees the complete new state (the new
generation, a re-initialised ForkLocal, zeros in regions), never a half-done one,
and never waits for itself; an exception raised by a signal handler at any
instant leaves nothing held, so every later call completes. Each sweep runs in a
fresh interpreter, on both backends, over every fork route; every wait is
bounded, so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from support import run_python

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork"),
    pytest.mark.parametrize("backend", ["", "getpid"], ids=["default-backend", "getpid-backend"]),
]

# -- finalizers at every cyclic-GC threshold from 1 to 50 -------------------------------------------

FINALIZERS = r"""
import gc, json, os, sys
import inherit
from inherit.testing import available_routes, run_in_child

PARENT = os.getpid()
seen = []

class Touches:
    # A finalizer that uses the library: on a detection in progress it must see all of it.
    def __del__(self):
        try:
            record = {"pid": os.getpid(), "gen": inherit.generation()}
            if SESSION is not None:
                record["token"] = SESSION.token
                record["region_zero"] = bytes(REGION) == bytes(16)
            seen.append(record)
        except BaseException as exc:
            seen.append({"pid": os.getpid(), "error": repr(exc)})

def garbage(n):
    for _ in range(n):
        cycle = [Touches()]
        cycle.append(cycle)

SESSION = REGION = None
out = {"first_use": [], "detection": {}}

# First use (backend selection) with cyclic garbage pending: each child is forked before the
# library was ever used, so its first call chooses the backend.
def first_use(threshold):
    gc.set_threshold(threshold)
    garbage(3 * threshold)
    inherit.zero_on_fork(32)
    final = inherit.generation()
    gc.collect()
    mine = [r for r in seen if r["pid"] == os.getpid()]
    return final, mine

for threshold in range(1, 51):
    final, records = run_in_child(first_use, threshold, route="os.fork", timeout=20)
    bad = [r for r in records if r.get("gen") != final]
    out["first_use"].append({"threshold": threshold, "records": len(records), "bad": bad})

class Session(inherit.ForkLocal):
    def __init__(self):
        self.token = "fresh"

SESSION = Session()
SESSION.token = "parent-secret"
REGION = inherit.zero_on_fork(16)
REGION[:] = b"\xaa" * 16

def detect(threshold):
    gc.set_threshold(threshold)
    garbage(threshold)
    final = inherit.generation()  # settles the fork here (raw routes) or already did (os.fork)
    gc.collect()
    mine = [r for r in seen if r["pid"] == os.getpid()]
    return final, mine

for route in available_routes():
    results = out["detection"][route] = []
    for threshold in range(1, 51):
        gc.set_threshold(threshold)
        garbage(threshold)  # pending at the fork: the child's detection allocates and collects
        final, records = run_in_child(detect, threshold, route=route, timeout=20)
        gc.set_threshold(700)
        bad = [r for r in records
               if r.get("gen") != final or r.get("token") != "fresh" or r.get("region_zero") is not True]
        results.append({"threshold": threshold, "records": len(records), "bad": bad})
gc.collect()
out["parent_token"] = SESSION.token
print("RESULT " + json.dumps(out))
"""


def _result(code: str, backend: str, timeout: float) -> dict[str, object]:
    proc = run_python(code, env={"INHERIT_BACKEND": backend}, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    line = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1]
    result: dict[str, object] = json.loads(line[len("RESULT ") :])
    return result


def test_finalizers_during_first_use_and_detection_see_the_complete_state(backend: str) -> None:
    out = _result(FINALIZERS, backend, timeout=600)
    first_use = out["first_use"]
    assert isinstance(first_use, list)
    assert all(not case["bad"] for case in first_use), [c for c in first_use if c["bad"]][:3]
    assert sum(case["records"] for case in first_use) > 0, "no finalizer ran: the test tested nothing"
    detection = out["detection"]
    assert isinstance(detection, dict) and detection
    for route, cases in detection.items():
        bad = [case for case in cases if case["bad"]]
        assert not bad, f"{route}: {bad[:3]}"
        assert sum(case["records"] for case in cases) > 0, f"{route}: no finalizer ran in a child"
    assert out["parent_token"] == "parent-secret"


# -- signal handlers at random instants ---------------------------------------------------------------

SIGNALS = r"""
import json, os, random, signal, sys, time
import inherit
from inherit.testing import _raw_fork, available_routes

PARENT = os.getpid()
ROUTES = [r for r in available_routes() if r != "multiprocessing"]
KINDS = ("raise", "call-then-raise", "call")
PER_CASE = int(sys.argv[1])

class Interrupt(BaseException):
    pass

def handler(kind):
    def on_signal(signum, frame):
        if kind != "raise":
            inherit.generation()  # re-entering the library from the handler itself
        if kind != "call":
            raise Interrupt()
    return on_signal

def child_checks(parent_gen, parent_draw):
    # Everything a worker's exit path might touch; any of it may be interrupted once.
    gen = inherit.generation()
    if gen == parent_gen or inherit.generation() != gen:
        return 3
    if SESSION is not None:
        if SESSION.token != "fresh" or bytes(REGION) != bytes(16) or RNG.random() == parent_draw:
            return 4
    with inherit.zero_on_fork(64) as fresh:
        fresh[:] = b"x" * 64
    return 0

def child_main(parent_gen, parent_draw):
    while True:  # the one signal may land anywhere: retry until a full pass completes
        try:
            try:
                code = child_checks(parent_gen, parent_draw)
            except (Interrupt, RuntimeError):
                continue
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            return code
        except Interrupt:
            continue

CURRENT = None

def finish_as_child():
    while True:
        try:
            os._exit(child_main(*CURRENT))
        except BaseException:
            continue

def run(route, kind, parent_gen, parent_draw):
    global CURRENT
    CURRENT = (parent_gen, parent_draw)
    signal.signal(signal.SIGUSR1, handler(kind))
    pid = _raw_fork(route)
    if pid == 0:
        finish_as_child()
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    time.sleep(random.uniform(0, 0.0006))
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hang"

SESSION = REGION = RNG = None
out = {}

def main():
    global SESSION, REGION, RNG
    for phase in ("first-use", "detection"):
        parent_gen = None
        if phase == "detection":
            class Session(inherit.ForkLocal):
                def __init__(self):
                    self.token = "fresh"
            SESSION = Session()
            SESSION.token = "parent"
            REGION = inherit.zero_on_fork(16)
            REGION[:] = b"\xaa" * 16
            RNG = inherit.Random()
            parent_gen = inherit.generation()
        for route in ROUTES:
            for kind in KINDS:
                codes = {}
                for _ in range(PER_CASE):
                    draw = None
                    if RNG is not None:  # the parent's next draw, peeked without changing how RNG reseeds
                        state = random.Random.getstate(RNG)
                        draw = random.Random.random(RNG)
                        random.Random.setstate(RNG, state)
                    code = run(route, kind, parent_gen, draw)
                    codes[str(code)] = codes.get(str(code), 0) + 1
                out[f"{phase} {route} {kind}"] = codes

while True:  # an interrupt that escapes the harness in a child still ends as that child
    try:
        main()
        break
    except Interrupt:
        if os.getpid() == PARENT:
            raise
        finish_as_child()
print("RESULT " + json.dumps(out))
"""


def test_signal_handlers_at_random_instants_never_leave_a_lock_held(backend: str) -> None:
    out = _result(SIGNALS.replace("sys.argv[1]", "25"), backend, timeout=600)
    assert out, "no case ran"
    problems = {case: codes for case, codes in out.items() if set(codes) != {"0"}}  # type: ignore[call-overload]
    assert not problems, problems
    total = sum(sum(codes.values()) for codes in out.values())  # type: ignore[attr-defined]
    assert total >= 25 * len(out)


def test_a_sigterm_handler_that_exits_mid_detection_lets_the_worker_exit(backend: str) -> None:
    """The realistic case: a pre-fork worker gets SIGTERM right after the fork, and its exit path
    (atexit, finally blocks) touches the library. It must exit, every time.

    The handler also sets a flag, as servers' handlers do, and the parent repeats SIGTERM until
    the worker exits: CPython discards an exception raised while os.fork()'s child hooks run
    (random's own hook included), and drops signals that arrive before its child-side signal
    reset, with or without this library. A worker stuck on a lock never exits, however often
    it is told.
    """
    code = r"""
import atexit, json, os, random, signal, sys, time
import inherit
from inherit.testing import _raw_fork, available_routes

class Pool(inherit.ForkLocal):
    def __init__(self):
        self.connections = []

pool = Pool()
pool.connections.append("parent-socket")
outcomes = {}
stop = []

def on_term(*args):
    stop.append(1)
    sys.exit(0)

for route in [r for r in available_routes() if r != "multiprocessing"]:
    for _ in range(40):
        signal.signal(signal.SIGTERM, on_term)
        pid = _raw_fork(route)
        if pid == 0:
            atexit.register(lambda: pool.connections.clear())  # the exit path uses the library
            try:
                while not stop:
                    pool.connections.append(inherit.generation())
                    if len(pool.connections) > 1000:
                        pool.connections.clear()
            finally:
                pool.connections.append("closing")
            sys.exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(random.uniform(0, 0.001))
        deadline = time.monotonic() + 10
        status = "hang"
        next_term = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_term:
                os.kill(pid, signal.SIGTERM)
                next_term = time.monotonic() + 0.1
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
                break
            time.sleep(0.001)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        outcomes[f"{route} {status}"] = outcomes.get(f"{route} {status}", 0) + 1
print("RESULT " + json.dumps({"outcomes": outcomes, "parent": pool.connections}))
"""
    out = _result(code, backend, timeout=300)
    outcomes = out["outcomes"]
    assert isinstance(outcomes, dict)
    # -15: a repeated SIGTERM met the default disposition, which interpreter shutdown restores:
    # the worker was already exiting. A worker stuck on a lock keeps its handler and never shows it.
    assert all(key.endswith((" 0", " -15")) for key in outcomes), outcomes
    assert out["parent"] == ["parent-socket"]


def test_a_call_from_a_signal_handler_during_detection_raises_instead_of_waiting(backend: str) -> None:
    """Deterministic re-entry: a handler runs while its own thread is inside detection."""
    code = r"""
import json, os, signal, sys
import inherit
from inherit import _runtime
from inherit.testing import run_in_child

inherit.generation()
seen = {}

def child():
    real = _runtime._fresh_generation
    def slow_step(old):
        os.kill(os.getpid(), signal.SIGUSR1)  # delivered at the next bytecode: inside detection
        for _ in range(100):
            pass
        return real(old)
    _runtime._fresh_generation = slow_step
    def handler(signum, frame):
        try:
            seen["handler"] = inherit.generation()
        except RuntimeError as exc:
            seen["handler"] = str(exc)
    signal.signal(signal.SIGUSR1, handler)
    gen = inherit.generation()
    return gen, seen.get("handler"), inherit.generation()

gen, handler, again = run_in_child(child, route="libc.fork", timeout=20)
print("RESULT " + json.dumps({"gen": gen, "handler": handler, "again": again}))
"""
    out = _result(code, backend, timeout=60)
    assert out["gen"] == out["again"]
    assert isinstance(out["handler"], str) and "signal handler" in out["handler"], out


@pytest.mark.skipif(sys.platform != "linux", reason="a thread holding the lock across a fork from C")
def test_fork_from_c_while_another_thread_settles_a_fork(backend: str) -> None:
    """A thread is inside detection (slowed down) when another thread forks from C: the child settles."""
    code = r"""
import json, threading, time
import inherit
from inherit import _runtime
from inherit.testing import run_in_child

inherit.generation()

def grandchild_test():
    real = _runtime._fresh_generation
    entered = threading.Event()
    def slow(old):
        entered.set()
        time.sleep(0.5)
        return real(old)
    _runtime._fresh_generation = slow
    t = threading.Thread(target=inherit.generation)
    t.start()
    entered.wait(5)  # t now holds this process's lock, mid-detection
    _runtime._fresh_generation = real
    child = run_in_child(lambda: inherit.generation(), route="libc.fork", timeout=10)
    t.join()
    return child != inherit.generation()

print("RESULT " + json.dumps({"ok": run_in_child(grandchild_test, route="libc.fork", timeout=30)}))
"""
    assert _result(code, backend, timeout=60)["ok"] is True
