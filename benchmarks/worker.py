"""One configuration's in-process figures, measured in a fresh interpreter.

``run.py`` starts this with ``INHERIT_BACKEND`` (and ``INHERIT_PURE_PYTHON``)
set and reads one JSON object from stdout. Only the public API is used, plus
/proc for the memory figure. Nothing forks until a fork figure runs.

    worker.py timing ROUNDS REPS [FIGURES]  wall-time figures (FIGURES: comma list)
    worker.py callgrind N                   loops for callgrind (see run.py)
"""

from __future__ import annotations

import os
import sys

# Each per-call figure: (number, key, baseline statement, subject statement, setup).
# Setups run in one namespace after BASE, so statements load their names as
# globals, as in user code.
BASE = """
import os
import inherit

class GetpidGuarded:
    def __init__(self):
        self.pid = os.getpid()
        self.conn = object()

    def get(self):
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.conn = object()
        return self.conn

by_pid = GetpidGuarded()
"""

GUARD = """
class GenerationGuarded:
    def __init__(self):
        self.gen = inherit.generation()
        self.conn = object()

    def get(self):
        if self.gen != inherit.generation():
            self.gen = inherit.generation()
            self.conn = object()
        return self.conn

by_gen = GenerationGuarded()
"""

FORKLOCAL = """
class Local(inherit.ForkLocal):
    def __init__(self):
        self.conn = object()

local = Local()
local.conn
"""

ALLOC = """
inherit.zero_on_fork(32).close()
"""

RANDOM = """
import random
rng = inherit.Random()
base = random.Random()
rng.random()
base.random()
"""

CACHE = """
import functools

@inherit.per_process_cache
def cached(x):
    return x

@functools.lru_cache(maxsize=128)
def lru(x):
    return x

cached(1)
lru(1)
"""

PER_CALL: list[tuple[int, str, str, str, str]] = [
    (1, "guard", "by_pid.get()", "by_gen.get()", GUARD),
    (2, "generation", "os.getpid()", "inherit.generation()", ""),
    (3, "forklocal", "by_pid.get()", "local.conn", FORKLOCAL),
    (5, "alloc", "bytearray(32)", "inherit.zero_on_fork(32).close()", ALLOC),
    (6, "random", "base.random()", "rng.random()", RANDOM),
    (7, "cache", "lru(1)", "cached(1)", CACHE),
]

# 1: the cost of a new process with (almost) no ForkLocal, for reference.
FORK_SIZES = (1, 1_000, 10_000, 100_000)
REGIONS = 10_000
CHILD_TIMEOUT = 60.0

# perf_counter_ns() stamps from our own at-fork hooks, which bracket every hook
# registered between them (the library's): see fork_hooks().
_marks: dict[str, int] = {}


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def namespace(setup: str) -> dict[str, object]:
    ns: dict[str, object] = {"__name__": "bench"}
    exec(BASE + setup, ns)
    return ns


# ---------------------------------------------------------------- wall time


def calibrate(timer: object, seconds: float) -> int:
    """Loops for one timeit() call to take about ``seconds``."""
    import timeit

    assert isinstance(timer, timeit.Timer)
    loops = 10
    while True:
        elapsed = timer.timeit(loops)
        if elapsed >= 0.002 or loops >= 10**8:
            return max(1, int(loops * seconds / max(elapsed, 1e-9)))
        loops *= 10


def interleaved_min(
    pairs: dict[str, tuple[dict[str, object], str, str]], rounds: int, seconds: float = 0.002
) -> dict[str, dict[str, float]]:
    """Minimum ns per call of each (baseline, subject) pair over interleaved rounds.

    Baseline and subject of a pair run back to back in every round, and the
    order of the whole sequence reverses every other round, so both see the
    same machine state. Slices are short (a few ms, under a scheduler time
    slice) so that on a loaded machine many of them still run undisturbed.
    """
    import timeit

    timers: list[tuple[str, str, timeit.Timer, int]] = []
    for key, (ns, base_stmt, subject_stmt) in pairs.items():
        for role, stmt in (("baseline", base_stmt), ("subject", subject_stmt)):
            timer = timeit.Timer(stmt, globals=ns)
            timers.append((key, role, timer, calibrate(timer, seconds)))
    best = {key: {"baseline": float("inf"), "subject": float("inf")} for key in pairs}
    for i in range(rounds):
        for key, role, timer, loops in timers if i % 2 == 0 else reversed(timers):
            best[key][role] = min(best[key][role], timer.timeit(loops) / loops * 1e9)
    return best


def per_call(rounds: int, wanted: set[int] | None) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    pairs: dict[str, tuple[dict[str, object], str, str]] = {}
    for number, key, base_stmt, subject_stmt, setup in PER_CALL:
        if wanted is not None and number not in wanted:
            continue
        try:
            ns = namespace(setup)
            for stmt in (base_stmt, subject_stmt):
                exec(stmt, ns)
        except Exception as exc:
            out[key] = {"na": error_text(exc)}
            continue
        pairs[key] = (ns, base_stmt, subject_stmt)
    for key, best in interleaved_min(pairs, rounds).items():
        out[key] = {"baseline_ns": best["baseline"], "subject_ns": best["subject"]}
    return out


# ---------------------------------------------------------------- memory


def wipe_on_fork_vmas() -> tuple[int, int] | None:
    """(bytes, count) of wipe-on-fork VMAs in this process, from /proc/self/smaps."""
    try:
        with open("/proc/self/smaps", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    size = count = current = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":") and "-" in fields[0]:
            lo, hi = fields[0].split("-", 1)
            current = int(hi, 16) - int(lo, 16)
        elif fields[0] == "VmFlags:" and "wf" in fields[1:]:
            size += current
            count += 1
    return size, count


def memory() -> dict[str, object]:
    import inherit

    if inherit.backend() == "getpid":
        return {"na": "the getpid backend asks the kernel to wipe nothing: there are no wipe-on-fork VMAs"}
    before = wipe_on_fork_vmas()
    if before is None:
        return {"na": "no /proc/self/smaps here"}
    regions = [inherit.zero_on_fork(32) for _ in range(REGIONS)]
    after = wipe_on_fork_vmas()
    for r in regions:
        r.close()
    assert after is not None
    return {
        "regions": REGIONS,
        "page_size": os.sysconf("SC_PAGESIZE"),
        "wf_bytes_before": before[0],
        "wf_vmas_before": before[1],
        "wf_bytes": after[0],
        "wf_vmas": after[1],
    }


# ---------------------------------------------------------------- forks


def stamp(name: str) -> None:
    import time

    _marks[name] = time.perf_counter_ns()


def register_outer_hooks() -> None:
    """Our first at-fork hooks: registered before ``inherit`` is imported.

    ``before`` hooks run in reverse registration order and ``after_in_child``
    hooks in registration order, so these and the ones from
    register_inner_hooks() bracket every hook the library registers.
    """
    os.register_at_fork(before=lambda: stamp("before_end"), after_in_child=lambda: stamp("child_start"))


def register_inner_hooks() -> None:
    os.register_at_fork(before=lambda: stamp("before_start"), after_in_child=lambda: stamp("child_end"))


def libc_fork() -> object:
    """libc ``fork()`` through ctypes, with the GIL held: no Python at-fork hooks run."""
    import ctypes

    fork = ctypes.PyDLL(None).fork
    fork.restype = ctypes.c_int
    fork.argtypes = []
    return fork


def in_child(pipe: int, body: object) -> None:
    """Run ``body`` in a forked child, send its JSON result, and never return."""
    import json

    try:
        assert callable(body)
        result = body()
    except BaseException as exc:
        result = {"na": "in the child: " + error_text(exc)}
    try:
        os.write(pipe, json.dumps(result).encode())
    finally:
        os._exit(0)


def collect(pid: int, pipe: int) -> dict[str, object]:
    """The child's JSON result; waits at most CHILD_TIMEOUT, then kills it."""
    import json
    import select
    import signal
    import time

    deadline = time.monotonic() + CHILD_TIMEOUT
    chunks = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(pipe, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(pipe)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline + 5:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"na": f"the child did not exit within {CHILD_TIMEOUT:.0f} s"}
        time.sleep(0.001)
    if not chunks:
        return {"na": f"the child sent nothing (wait status {status})"}
    result: dict[str, object] = json.loads(b"".join(chunks))
    return result


def fork_child(route: str, body: object) -> dict[str, object]:
    """Fork by ``route`` ("os.fork" or "libc"), run ``body`` in the child, return its result."""
    import time

    fork = os.fork if route == "os.fork" else libc_fork()
    assert callable(fork)
    r, w = os.pipe()
    _marks.clear()
    _marks["t0"] = time.perf_counter_ns()
    pid = int(fork())
    if pid == 0:
        os.close(r)
        in_child(w, body)
    os.close(w)
    if pid < 0:
        os.close(r)
        return {"na": "fork() failed"}
    return collect(pid, r)


def first_calls(target: object) -> dict[str, object]:
    """In a fresh child: the first ``generation()`` and the first reads of ``target``."""
    import time

    import inherit

    t1 = time.perf_counter_ns()
    inherit.generation()
    t2 = time.perf_counter_ns()
    target.value  # type: ignore[attr-defined]  # noqa: B018 - the read is what is measured
    t3 = time.perf_counter_ns()
    target.value  # type: ignore[attr-defined]  # noqa: B018
    t4 = time.perf_counter_ns()
    hooks = 0
    if "child_end" in _marks:  # os.fork(): the library's hooks ran between ours
        hooks = _marks["before_end"] - _marks["before_start"] + _marks["child_end"] - _marks["child_start"]
    return {
        "fork_return_ns": t1 - _marks["t0"],
        "hooks_ns": hooks,
        "first_generation_ns": t2 - t1,
        "first_read_ns": t3 - t2,
        "second_read_ns": t4 - t3,
    }


def touched_reads(ns: dict[str, object], n: int, rounds: int) -> dict[str, object]:
    """In a fresh child: reads of one instance touched here, while ``n`` others are not."""
    exec("local.conn", ns)
    best = interleaved_min({"read": (ns, "by_pid.get()", "local.conn")}, rounds)
    return {"n": n, "baseline_ns": best["read"]["baseline"], "subject_ns": best["read"]["subject"]}


def forks(reps: int, rounds: int) -> dict[str, object]:
    """Figures 9 and 10: the first calls in a child with many live ForkLocals."""
    import functools
    import gc

    import inherit

    if not hasattr(os, "fork"):
        return {"na": "no fork() here"}
    try:
        libc_fork()
    except (ImportError, AttributeError, OSError) as exc:
        return {"na": "no libc fork() through ctypes: " + error_text(exc)}
    register_inner_hooks()

    class Item(inherit.ForkLocal):
        def __init__(self) -> None:
            self.value = 1

    first: dict[str, list[dict[str, object]]] = {}
    fast: dict[str, object] = {}
    for n in FORK_SIZES:
        items = [Item() for _ in range(n)]
        gc.collect()
        for route in ("os.fork", "libc"):
            runs = [fork_child(route, functools.partial(first_calls, items[n // 2])) for _ in range(reps)]
            good = [r for r in runs if "na" not in r]
            if not good:
                first.setdefault(route, []).append({"n": n, "na": runs[0]["na"]})
                continue
            best: dict[str, object] = {"n": n}
            for field in good[0]:
                best[field] = min(int(str(r[field])) for r in good)
            first.setdefault(route, []).append(best)
        if n == FORK_SIZES[-1]:
            try:
                ns = namespace(FORKLOCAL)
            except Exception as exc:
                fast = {"na": error_text(exc)}
            else:
                body = functools.partial(touched_reads, ns, n, rounds)
                fast = {route: fork_child(route, body) for route in ("os.fork", "libc")}
        del items
        gc.collect()
    return {"first": first, "touched": fast}


# ---------------------------------------------------------------- entry points


def timing(rounds: int, reps: int, wanted: set[int] | None) -> dict[str, object]:
    import inherit

    out: dict[str, object] = {}
    try:
        out["backend"] = inherit.backend()
    except inherit.BackendUnavailable as exc:
        return {"unavailable": str(exc)}
    diag = inherit.diagnostics()
    out["accelerated"] = diag.get("accelerated")
    out["reason"] = diag.get("reason")
    out["restore"] = {k: v for k, v in diag.items() if "vmclock" in k.lower() or "restore" in k.lower()}
    out["inherit_file"] = inherit.__file__
    out["inherit_version"] = getattr(inherit, "__version__", None)
    out["per_call"] = per_call(rounds, wanted)
    if wanted is None or 8 in wanted:
        try:
            out["memory"] = memory()
        except Exception as exc:
            out["memory"] = {"na": error_text(exc)}
    if wanted is None or {9, 10} & wanted:
        try:
            out["forks"] = forks(reps, rounds)
        except Exception as exc:
            out["forks"] = {"na": error_text(exc)}
    return out


def callgrind(n: int) -> None:
    """Loops to count under callgrind, separated by ``os.getppid()`` markers.

    run.py starts this with ``--dump-before=getppid``, so each marker closes
    one profile. The labels of the closed intervals go to stdout, in order.
    """
    marker = os.getppid
    labels: list[str] = []

    def close(label: str) -> None:
        labels.append(label)
        marker()

    close("startup")
    out: dict[str, object] = {"n": n, "labels": labels, "na": {}}
    try:
        import inherit

        inherit.zero_on_fork(32)
        inherit.generation()
    except Exception as exc:
        out["na"]["first_use"] = error_text(exc)  # type: ignore[index]
    close("first_use")
    import gc
    import itertools

    # As timeit does: iterating over repeat(None) allocates nothing per pass.
    loop_src = "def _loop(_n):\n    for _i in _repeat(None, _n):\n        {}\n"
    jobs = [("empty", "pass", "")]
    for _, key, base_stmt, subject_stmt, setup in PER_CALL:
        jobs += [(key + ":baseline", base_stmt, setup), (key + ":subject", subject_stmt, setup)]
    gc.disable()
    for label, stmt, setup in jobs:
        try:
            ns = namespace(setup)
            ns["_repeat"] = itertools.repeat
            exec(loop_src.format(stmt), ns)
            loop = ns["_loop"]
            assert callable(loop)
            loop(300)  # specialise and warm caches before counting
        except Exception as exc:
            out["na"][label.split(":")[0]] = error_text(exc)  # type: ignore[index]
            continue
        close(label + ":setup")
        loop(n)
        close(label + ":n")
        loop(2 * n)
        close(label + ":2n")
    print(json_text(out))


def json_text(obj: object) -> str:
    import json

    return json.dumps(obj)


def main(argv: list[str]) -> int:
    if argv[:1] == ["callgrind"]:
        callgrind(int(argv[1]))
        return 0
    if argv[:1] == ["timing"]:
        # Stdlib modules that register at-fork hooks are loaded before ours, so
        # the bracket holds only the library's hooks.
        import ctypes  # noqa: F401
        import random  # noqa: F401
        import threading  # noqa: F401

        if hasattr(os, "register_at_fork"):
            register_outer_hooks()
        wanted = {int(x) for x in argv[3].split(",")} if len(argv) > 3 else None
        print(json_text(timing(int(argv[1]), int(argv[2]), wanted)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
