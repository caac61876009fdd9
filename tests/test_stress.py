"""Stress: many forks by every route, deep fork chains, a fork pool, threads, concurrent allocation.

Every test has a short variant (default suite, unmarked) and a full one
(marker ``stress``, run by ``pytest -m stress --stress-full`` / ``tox -e
stress``). Each prints one figures line, ``STRESS <name>: forks=.. seconds=..
stale=.. crashes=..`` (stale: non-zero bytes a child read where it must see
zeros), before asserting that stale and crashes are both 0. Seconds are
reported, never asserted.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import inherit
from inherit import _region, _runtime
from inherit.testing import ChildFailed, available_routes, run_in_child

ROUTES = available_routes()
RAW_ROUTES = [r for r in ROUTES if r not in ("os.fork", "multiprocessing")]

pytestmark = [
    pytest.mark.skipif(not ROUTES, reason="no fork on this platform"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

VARIANTS = pytest.mark.parametrize("variant", ["short", pytest.param("full", marks=pytest.mark.stress)])


@pytest.fixture
def scale(variant: str, stress_scale: int) -> int:
    """1 for the short variant; the --stress-full scale for the full one (skipped without it)."""
    if variant == "short":
        return 1
    if stress_scale == 1:
        pytest.skip("the full stress variant runs with -m stress --stress-full (tox -e stress)")
    return stress_scale


class Figures:
    """Counters for one scenario and its summary line."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.forks = 0
        self.stale = 0
        self.crashes = 0
        self.problems: list[str] = []
        self.extra: dict[str, object] = {}
        self.start = time.perf_counter()

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)

    def finish(self) -> None:
        """Print the figures, then fail if anything went wrong."""
        seconds = time.perf_counter() - self.start
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        print(
            f"STRESS {self.name}: forks={self.forks} seconds={seconds:.2f} stale={self.stale} "
            f"crashes={self.crashes}{extra}"
        )
        assert self.stale == 0, f"{self.stale} stale bytes seen in children"
        assert self.crashes == 0, f"{self.crashes} children crashed or hung: {self.problems}"
        assert not self.problems, self.problems


def nonzero(region: inherit.Region) -> int:
    """How many bytes of ``region`` are not zero (read through the API)."""
    return len(region) - bytes(region).count(0)


def random_fill(region: inherit.Region) -> bytes:
    data = os.urandom(len(region)).replace(b"\x00", b"\x01")  # every byte non-zero: any leak shows
    region[:] = data
    return data


def child_call(
    figures: Figures, func: Callable[..., Any], *args: Any, route: str, timeout: float = 60.0
) -> Any:
    """Fork one child; count it; a crash or hang is counted, not raised."""
    figures.forks += 1
    try:
        return run_in_child(func, *args, route=route, timeout=timeout)
    except (ChildFailed, TimeoutError) as exc:
        figures.crashes += 1
        figures.problem(f"{route}: {exc!r}")
        return None


# -- many forks over every route ------------------------------------------------------------


@VARIANTS
def test_many_forks_every_route(variant: str, scale: int) -> None:
    """Every route, many times: small, large and secret regions read zero, generation moves,
    a keep-on-fork region is inherited, and the parent's bytes never change."""
    per_route = 20 if scale == 1 else 50 * scale  # full: 500 per route, thousands in all
    figures = Figures(f"many-forks[{variant}]")
    zero = {
        "small": inherit.zero_on_fork(32),
        "slot-2048": inherit.zero_on_fork(2048),
        "large": inherit.zero_on_fork(64 * 1024 + 1),
        "secret": inherit.zero_on_fork(32, secret=True),
        "secret-large": inherit.zero_on_fork(8192, secret=True),
    }
    kept = inherit.keep_on_fork(inherit.zero_on_fork(64))

    def child(parent_gen: int, kept_data: bytes) -> tuple[int, bool, bool]:
        stale = sum(nonzero(r) for r in zero.values())
        return stale, inherit.generation() != parent_gen, bytes(kept) == kept_data

    for i in range(per_route):
        for route in ROUTES:
            contents = {name: random_fill(r) for name, r in zero.items()}
            kept_data = random_fill(kept)
            gen = inherit.generation()
            result = child_call(figures, child, gen, kept_data, route=route)
            if result is None:
                continue
            stale, moved, inherited = result
            figures.stale += stale
            if not moved:
                figures.problem(f"{route} #{i}: generation did not move")
            if not inherited:
                figures.problem(f"{route} #{i}: keep_on_fork region not inherited")
            if inherit.generation() != gen:
                figures.problem(f"{route} #{i}: generation moved in the parent")
            if any(bytes(zero[name]) != data for name, data in contents.items()):
                figures.problem(f"{route} #{i}: the parent's bytes changed")
    figures.extra["routes"] = len(ROUTES)
    for r in (*zero.values(), kept):
        r.close()
    figures.finish()


# -- fork chains 16 deep --------------------------------------------------------------------

DEPTH = 16


def _chain_level(
    level: int, route_of: Callable[[int], str], ancestors: list[inherit.Region], parent_gen: int
) -> list[dict[str, Any]]:
    """One level of a chain (runs in a child): check every ancestor's region, then fork the next."""
    own_gen = inherit.generation()
    record: dict[str, Any] = {
        "level": level,
        "pid": os.getpid(),
        "stale": sum(nonzero(r) for r in ancestors),
        "gen_moved": own_gen != parent_gen,
    }
    if level == DEPTH:
        return [record]
    mine = inherit.zero_on_fork(32, secret=True)
    mine_large = inherit.zero_on_fork(4096 + level)
    secret = random_fill(mine)
    secret_large = random_fill(mine_large)
    try:
        below = run_in_child(
            _chain_level,
            level + 1,
            route_of,
            [*ancestors, mine, mine_large],
            own_gen,
            route=route_of(level + 1),
            timeout=120,
        )
    except (ChildFailed, TimeoutError) as exc:
        below = [{"level": level + 1, "crash": repr(exc)}]
    record["intact"] = bytes(mine) == secret and bytes(mine_large) == secret_large
    return [record, *below]


class _chain_routes:
    """Level -> route for one chain, rotating through every route.

    multiprocessing is used at most once per chain: its children are daemonic
    and may not start multiprocessing children themselves (nor may their forks).
    """

    def __init__(self, chain: int) -> None:
        self.routes: dict[int, str] = {}
        used_mp = False
        others = [r for r in ROUTES if r != "multiprocessing"]
        for level in range(1, DEPTH + 1):
            route = ROUTES[(chain + level) % len(ROUTES)]
            if route == "multiprocessing" and used_mp:
                route = others[(chain + level) % len(others)]
            used_mp |= route == "multiprocessing"
            self.routes[level] = route

    def __call__(self, level: int) -> str:
        return self.routes[level]


@VARIANTS
def test_fork_chains_16_deep(variant: str, scale: int) -> None:
    """Each level writes its own secret into fresh regions and forks; every descendant reads zeros
    in all its ancestors' regions, sees a new generation, and each parent's secret survives."""
    chains = 2 * scale
    figures = Figures(f"fork-chains-16[{variant}]")
    for chain in range(chains):
        route_of = _chain_routes(chain)

        records = child_call(
            figures, _chain_level, 1, route_of, [], inherit.generation(), route=route_of(1), timeout=300
        )
        if records is None:
            continue
        figures.forks += len(records) - 1  # the nested forks below the first
        pids = set()
        for rec in records:
            if "crash" in rec:
                figures.crashes += 1
                figures.problem(f"chain {chain} level {rec['level']}: {rec['crash']}")
                continue
            figures.stale += rec["stale"]
            pids.add(rec["pid"])
            if not rec["gen_moved"]:
                figures.problem(f"chain {chain} level {rec['level']}: generation did not move")
            if rec.get("intact") is False:
                figures.problem(f"chain {chain} level {rec['level']}: the parent's secret changed")
        if len(records) != DEPTH and not figures.crashes:
            figures.problem(f"chain {chain}: {len(records)} levels, expected {DEPTH}")
        if len(pids) != len([r for r in records if "crash" not in r]):
            figures.problem(f"chain {chain}: repeated pids {sorted(pids)}")
    figures.extra["chains"] = chains
    figures.extra["depth"] = DEPTH
    figures.finish()


# -- a multiprocessing fork pool ------------------------------------------------------------

_POOL_PARENT_GEN: int | None = None
_POOL_REGIONS: list[inherit.Region] = []


def _pool_init(parent_gen: int, regions: list[inherit.Region]) -> None:
    global _POOL_PARENT_GEN, _POOL_REGIONS
    _POOL_PARENT_GEN = parent_gen
    _POOL_REGIONS = regions


def _pool_task(i: int) -> tuple[int, int, int, bool]:
    """(pid, generation, stale bytes, generation differs from the parent's)."""
    gen = inherit.generation()
    stale = sum(nonzero(r) for r in _POOL_REGIONS)
    return os.getpid(), gen, stale, gen != _POOL_PARENT_GEN


@VARIANTS
def test_fork_pool_tasks(variant: str, scale: int) -> None:
    """4 fork workers (each replaced after 10 tasks) run 100 x scale tasks; each checks regions and
    generation(), which must also stay constant within one worker."""
    tasks = 100 * scale
    figures = Figures(f"fork-pool[{variant}]")
    regions = [inherit.zero_on_fork(32), inherit.zero_on_fork(8192), inherit.zero_on_fork(48, secret=True)]
    for r in regions:
        random_fill(r)
    parent_gen = inherit.generation()
    context = multiprocessing.get_context("fork")
    with context.Pool(4, initializer=_pool_init, initargs=(parent_gen, regions), maxtasksperchild=10) as pool:
        try:
            results = pool.map(_pool_task, range(tasks), chunksize=1)
        except Exception as exc:
            figures.crashes += 1
            figures.problem(repr(exc))
            results = []
    gens: dict[int, set[int]] = {}
    for pid, gen, stale, moved in results:
        figures.stale += stale
        gens.setdefault(pid, set()).add(gen)
        if not moved:
            figures.problem(f"worker {pid}: generation equals the parent's")
    figures.forks = len(gens)
    for pid, seen in gens.items():
        if len(seen) != 1:
            figures.problem(f"worker {pid}: generation changed between tasks {sorted(seen)}")
    if len(results) != tasks and not figures.crashes:
        figures.problem(f"{len(results)} results for {tasks} tasks")
    if inherit.generation() != parent_gen:
        figures.problem("generation moved in the parent")
    figures.extra["tasks"] = len(results)
    for r in regions:
        r.close()
    figures.finish()


# -- threads hammering generation()/ForkLocal while children come and go --------------------


class _Conn(inherit.ForkLocal):
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.pid = os.getpid()


class _Park:
    """Hold the hammering threads still for the instant of a raw fork.

    A raw fork copies CPython's GIL state as it is: if another thread has
    asked for the GIL (``gil_drop_request``), the child's only thread drops
    the GIL at its next check and waits forever for a thread that does not
    exist there. That hangs children even without this library (3 of 60
    libc forks from a thread, switch interval 0.5 ms), so hammering pauses
    for the fork syscall only and resumes as soon as it returns in the parent.

    A thread that merely said "parked" may still be running bytecode and so
    still want the GIL; on Linux the fork waits until /proc shows every
    hammering thread blocked in read() on the park pipe, where it wants nothing.
    """

    def __init__(self) -> None:
        self.request = threading.Event()
        self.read_fd, self.write_fd = os.pipe()
        self.tids: list[int] = []

    def checkpoint(self) -> None:
        if self.request.is_set():
            os.read(self.read_fd, 1)  # blocks, without the GIL, until the fork is done

    def _blocked(self, tid: int) -> bool:
        try:
            with open(f"/proc/self/task/{tid}/syscall") as f:
                fields = f.read().split()
        except FileNotFoundError:
            return True  # the thread has exited
        # "<nr> <fd> <buf> <count> ...": a syscall on our fd, one byte: the read() above
        return (
            len(fields) > 3
            and fields[0].isdigit()
            and int(fields[1], 16) == self.read_fd
            and fields[3] == "0x1"
        )

    def __enter__(self) -> None:
        self.request.set()
        deadline = time.monotonic() + 30
        if not os.path.exists("/proc/self/task"):
            time.sleep(0.01)  # best effort where /proc cannot tell
            return
        while not all(self._blocked(tid) for tid in self.tids):
            if time.monotonic() > deadline:
                raise RuntimeError("a hammering thread did not park")
            time.sleep(0.0002)

    def __exit__(self, *exc: object) -> None:
        self.request.clear()
        os.write(self.write_fd, b"x" * len(self.tids))

    def close(self) -> None:
        self.request.clear()
        os.write(self.write_fd, b"x" * len(self.tids))  # nobody may stay blocked
        os.close(self.write_fd)


def _raw_fork_call(figures: Figures, route: str, func: Callable[[], Any], park: _Park) -> Any:
    """Fork by a raw route with the hammers parked for the syscall only; return func()'s result."""
    import pickle
    import select

    from inherit.testing import _raw_fork

    read_fd, write_fd = os.pipe()
    figures.forks += 1
    with park:
        pid = _raw_fork(route)
        if pid == 0:  # the child: hammers do not exist here
            try:
                payload = pickle.dumps(("ok", func()))
            except BaseException as exc:
                payload = pickle.dumps(("error", repr(exc)))
            os.write(write_fd, payload)
            os._exit(0)
    os.close(write_fd)  # hammers run again while the child works
    try:
        ready, _, _ = select.select([read_fd], [], [], 30)
        data = os.read(read_fd, 1 << 16) if ready else b""
    finally:
        os.close(read_fd)
        if not data:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
    if not data:
        figures.crashes += 1
        figures.problem(f"{route}: the child did not answer")
        return None
    kind, value = pickle.loads(data)
    if kind != "ok":
        figures.crashes += 1
        figures.problem(f"{route}: {value}")
        return None
    return value


@VARIANTS
def test_threads_hammer_while_children_come_and_go(variant: str, scale: int) -> None:
    """Four threads hammer generation() and ForkLocal in the parent (no false positive allowed)
    while another thread forks by every route (raw forks keep the GIL through fork()); children
    see a new generation, a re-initialised ForkLocal, an empty bare one and zeroed regions."""
    per_route = 10 * scale
    figures = Figures(f"threads-and-forks[{variant}]")
    parent_pid, parent_gen = os.getpid(), inherit.generation()
    conn = _Conn("db")
    bare = inherit.ForkLocal()
    bare.token = "parent-only"
    region = inherit.zero_on_fork(32, secret=True)
    random_fill(region)
    stop = threading.Event()
    hammered = [0]
    false_positives: list[str] = []
    park = _Park()

    def hammer(k: int) -> None:
        local = _Conn(f"t{k}")
        registered.wait()
        n = 0
        while not stop.is_set():
            park.checkpoint()
            for _ in range(200):
                if inherit.generation() != parent_gen:
                    false_positives.append("generation moved in the parent")
                if conn.pid != parent_pid or local.pid != parent_pid:
                    false_positives.append("ForkLocal re-initialised in the parent")
                fresh = inherit.ForkLocal()
                fresh.value = n
                if fresh.value != n or bare.token != "parent-only":
                    false_positives.append("ForkLocal attribute lost in the parent")
            n += 200
            if false_positives:
                break
        hammered[0] += n

    def child() -> dict[str, Any]:
        bare_empty = not hasattr(bare, "token")
        fresh = inherit.zero_on_fork(64)  # the slab works in the child
        fresh[:] = b"c" * 64
        return {
            "gen_moved": inherit.generation() != parent_gen,
            "reinit": conn.pid == os.getpid() and conn.tag == "db",
            "bare_empty": bare_empty,
            "stale": nonzero(region),
            "fresh_ok": bytes(fresh) == b"c" * 64,
        }

    def fork_from_thread() -> None:
        for _ in range(per_route):
            for route in ROUTES:
                if route in RAW_ROUTES:
                    result = _raw_fork_call(figures, route, child, park)
                else:  # at-fork hooks reset the interpreter's threading state: hammers keep going
                    result = child_call(figures, child, route=route)
                if result is None:
                    continue
                figures.stale += result.pop("stale")
                for key, ok in result.items():
                    if not ok:
                        figures.problem(f"{route}: {key} failed in the child")

    hammers = [threading.Thread(target=hammer, args=(k,), daemon=True) for k in range(4)]
    registered = threading.Event()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # more thread switches per fork
    for t in hammers:
        t.start()
        assert t.native_id is not None
        park.tids.append(t.native_id)
    registered.set()
    try:
        forker = threading.Thread(target=fork_from_thread)
        forker.start()
        forker.join()
    finally:
        stop.set()
        park.close()
        for t in hammers:
            t.join()
        os.close(park.read_fd)
        sys.setswitchinterval(interval)
    figures.extra["hammer_calls"] = hammered[0]
    figures.extra["false_positives"] = len(false_positives)
    for text in false_positives[:5]:
        figures.problem(text)
    region.close()
    figures.finish()


# -- regions allocated and closed concurrently ---------------------------------------------

SIZES = [1, 16, 17, 32, 100, 1000, 2048, 2049, 5000]


def _slab_census() -> dict[str, int]:
    """Live slots in small zero-on-fork arenas, and large zero-on-fork mappings."""
    with _runtime.lock:
        arenas = list(_region._zero_arenas.values())
        return {
            "live_slots": sum(a.in_use for a in arenas if a.key is not None),
            "large": sum(1 for a in arenas if a.key is None),
        }


def _slab_problems() -> list[str]:
    """Structural checks on every pool: free lists sane, free slots wiped, no arena listed twice."""
    problems = []
    with _runtime.lock:
        if _region._pending:
            _region._drain()
        for key, pool in _region._pools.items():
            slot = key & 0xFFFF
            if len({id(a) for a in pool}) != len(pool):
                problems.append(f"slot {slot}: an arena is listed twice as available")
            for arena in pool:
                free = arena.free
                if not free and arena.fresh >= arena.size:
                    problems.append(f"slot {slot}: a full arena is listed as available")
                if len(set(free)) != len(free):
                    problems.append(f"slot {slot}: a slot is free twice")
                if any(off % arena.slot or not 0 <= off < arena.fresh for off in free):
                    problems.append(f"slot {slot}: a free offset is out of place")
                for off in free:
                    if any(arena.mem[off : off + arena.slot]):
                        problems.append(f"slot {slot}: free slot at {off} was not wiped")
                        break
    return problems


@VARIANTS
def test_concurrent_allocate_and_close(variant: str, scale: int) -> None:
    """Threads allocate, fill with a unique pattern, verify, move (keep_on_fork), close or drop
    regions at random; no pattern is ever disturbed and the slab's books balance afterwards."""
    threads_n, ops = 4, 500 * scale
    figures = Figures(f"concurrent-alloc[{variant}]")
    gc.collect()
    before = _slab_census()
    corrupt: list[str] = []
    errors: list[str] = []

    def work(k: int) -> None:
        rng = random.Random(k)
        live: list[tuple[inherit.Region, bytes]] = []
        try:
            for i in range(ops):
                size = rng.choice(SIZES)
                region = inherit.zero_on_fork(size, secret=rng.random() < 0.3)
                if bytes(region) != bytes(size):
                    corrupt.append(f"thread {k}: a fresh region was not zero")
                stamp = struct.pack("<HI", k, i)
                pattern = (stamp * (size // len(stamp) + 1))[:size]
                region[:] = pattern
                live.append((region, pattern))
                if rng.random() < 0.05:
                    r, p = live[rng.randrange(len(live))]
                    inherit.keep_on_fork(r)
                    if bytes(r) != p:
                        corrupt.append(f"thread {k}: keep_on_fork changed the bytes")
                if len(live) > 24:
                    r, p = live.pop(rng.randrange(len(live)))
                    if bytes(r) != p:
                        corrupt.append(f"thread {k}: pattern disturbed before close")
                    if rng.random() < 0.2:
                        del r  # dies unclosed: the finalizer frees it (maybe deferred)
                    else:
                        r.close()
            for r, p in live:
                if bytes(r) != p:
                    corrupt.append(f"thread {k}: pattern disturbed at the end")
                r.close()
        except Exception as exc:
            errors.append(f"thread {k}: {exc!r}")

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    gc.collect()
    inherit.zero_on_fork(1).close()  # drains finalizer releases deferred while the lock was busy
    after = _slab_census()
    problems = _slab_problems()
    figures.extra["ops"] = threads_n * ops
    figures.extra["corrupt"] = len(corrupt)
    assert not errors, errors[:5]
    assert not corrupt, corrupt[:5]
    assert not problems, problems
    assert after == before, f"slab books do not balance: before {before}, after {after}"
    figures.finish()


# -- raw forks while another thread holds a library lock (library gap; see the report) ----------


def _holding(
    acquire: Callable[[], Any], release: Callable[[], Any], route: str, action: Callable[[], Any]
) -> Any:
    """Hold a library lock in another thread while ``route`` forks; run ``action`` in the child."""
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        acquire()
        try:
            held.set()
            done.wait(10)
        finally:
            release()

    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    try:
        return run_in_child(action, route=route, timeout=1)  # a deadlock, not a slow child
    finally:
        done.set()
        t.join()


# A child made by a raw fork must not inherit a library lock that a thread of
# the parent held at that moment (that thread does not exist in the child).
RAW_PARAMS = RAW_ROUTES


@pytest.mark.parametrize("route", RAW_PARAMS)
def test_raw_fork_while_a_thread_holds_the_slab_lock(route: str) -> None:
    """E.g. a thread is allocating a region while another thread calls fork() from C."""
    inherit.zero_on_fork(16).close()

    def child() -> bytes:
        with inherit.zero_on_fork(32) as r:
            return bytes(r)

    lock = _runtime.lock
    assert _holding(lock.acquire, lock.release, route, child) == bytes(32)


@pytest.mark.parametrize("route", RAW_PARAMS)
def test_raw_fork_while_a_thread_holds_the_detection_lock(route: str) -> None:
    """A thread is settling a fork (holding this process's lock) while another forks from C."""
    gen = inherit.generation()
    lock = _runtime.lock_for_this_pid()
    moved = _holding(lock.acquire, lock.release, route, lambda: inherit.generation() != gen)
    assert moved is True
