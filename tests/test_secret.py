"""Secret hygiene and lifetime safety of regions.

``zero_on_fork(n, secret=True)`` promises: out of core dumps (MADV_DONTDUMP),
locked in RAM when mlock is allowed (and ``Region.locked`` says whether it
was), wiped on close and on garbage collection, and no copies of the bytes
made by the library itself. Lifetime: no view outlives the memory, a closed
region refuses every access, threads cannot corrupt the slab.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import inherit
from faultshim import fault_env
from inherit import _region
from support import run_python

LINUX = sys.platform.startswith("linux")


def address_of(region: inherit.Region) -> int:
    """The address of the region's first byte (through a view, released before returning)."""
    view = region.view()
    try:
        cell = ctypes.c_char.from_buffer(view)
        address = ctypes.addressof(cell)
        del cell
        return address
    finally:
        view.release()


def vm_flags(address: int) -> list[str]:
    """VmFlags of the mapping holding ``address``, read from /proc/self/smaps."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def slot_bytes(arena: Any, offset: int, size: int) -> bytes:
    """Raw bytes of a slot, read through the arena (not through the region)."""
    return bytes(arena.mem[offset : offset + size])


def fill(region: inherit.Region, byte: int = 0xA5) -> None:
    region[:] = bytes([byte]) * len(region)


# -- dontdump and mlock --------------------------------------------------------


@pytest.mark.linux
@pytest.mark.parametrize("size", [32, 8192], ids=["small", "large"])
def test_secret_pages_are_dontdump_and_locked_as_reported(size: int) -> None:
    """smaps shows 'dd' (not dumped) and 'lo' exactly when Region.locked says so."""
    with inherit.zero_on_fork(size, secret=True) as region:
        flags = vm_flags(address_of(region))
        assert region.secret
        assert "dd" in flags and region.dumpable is False, flags
        assert ("lo" in flags) == region.locked, (flags, region.locked)
        if inherit.backend() == "madvise":
            assert "wf" in flags, flags
        print(
            f"SECRET {size} B: VmFlags {' '.join(flags)}; locked={region.locked} dumpable={region.dumpable}"
        )


@pytest.mark.linux
def test_ordinary_regions_never_share_pages_with_secret_ones() -> None:
    """Secret and ordinary regions of one size live in different mappings with different flags."""
    with inherit.zero_on_fork(32, secret=True) as secret, inherit.zero_on_fork(32) as plain:
        flags = vm_flags(address_of(plain))
        assert "dd" not in flags and "lo" not in flags, flags
        assert plain.dumpable and not plain.locked and not plain.secret
        assert secret._arena is not plain._arena


DROP_PRIVILEGES = r"""
import ctypes, json, os, resource, sys
import inherit, inherit._region, inherit.backends._ffi, inherit.backends._secret, inherit.backends.madvise
from inherit.testing import available_routes, run_in_child

out = {}
inherit.backends._ffi.libc()
inherit.zero_on_fork(8)
ROUTES = [r for r in ("os.fork", "libc.fork") if r in available_routes()]
for route in ROUTES:  # import everything a fork route needs before the stdlib becomes unreadable
    run_in_child(int, route=route)
resource.setrlimit(resource.RLIMIT_MEMLOCK, (MEMLOCK_LIMIT, MEMLOCK_LIMIT))
out["euid"] = os.geteuid()
if os.geteuid() == 0:
    # CAP_IPC_LOCK ignores RLIMIT_MEMLOCK: record that, then become an ordinary user
    if CHECK_ROOT_BYPASS:  # its locked arena counts against the limit after setuid
        out["root_locked_under_limit"] = inherit.zero_on_fork(1024, secret=True).locked
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, so /proc/self/smaps stays readable

def address_of(region):
    view = region.view()
    cell = ctypes.c_char.from_buffer(view)
    address = ctypes.addressof(cell)
    del cell
    view.release()
    return address

def vm_flags(address):
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]

def check(region):
    region[:] = b"\x5a" * len(region)
    ok = bytes(region) == b"\x5a" * len(region)
    gen = inherit.generation()
    kids = [run_in_child(lambda: (bytes(region).count(0) == len(region), inherit.generation() != gen),
                         route=route) for route in ROUTES]
    flags = vm_flags(address_of(region))
    return {"locked": region.locked, "dumpable": region.dumpable, "lo": "lo" in flags,
            "dd": "dd" in flags, "works": ok, "children_zero": all(z and g for z, g in kids)}
"""


@pytest.mark.linux
def test_mlock_refused_by_rlimit_memlock() -> None:
    """RLIMIT_MEMLOCK=0 for an ordinary user: locked is False, the region still works and is dontdump."""
    code = (
        DROP_PRIVILEGES.replace("MEMLOCK_LIMIT", "0").replace("CHECK_ROOT_BYPASS", "True")
        + """
out["small"] = check(inherit.zero_on_fork(32, secret=True))
out["large"] = check(inherit.zero_on_fork(8192, secret=True))
print("RESULT " + json.dumps(out))
"""
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for kind in ("small", "large"):
        r = out[kind]
        assert r == {
            "locked": False,
            "dumpable": False,
            "lo": False,
            "dd": True,
            "works": True,
            "children_zero": True,
        }, (kind, r)
    if out["euid"] == 0:
        print(
            f"SECRET as root, RLIMIT_MEMLOCK=0: locked={out['root_locked_under_limit']} (CAP_IPC_LOCK "
            "ignores the limit); as uid 65534: locked=False, region works"
        )


@pytest.mark.linux
def test_locked_tells_the_truth_at_the_limit() -> None:
    """A limit of one arena: the first secret mapping is locked, the next ones are not; each says so."""
    limit = _region.ARENA_SIZE
    code = (
        DROP_PRIVILEGES.replace("MEMLOCK_LIMIT", str(limit)).replace("CHECK_ROOT_BYPASS", "False")
        + """
out["first"] = check(inherit.zero_on_fork(32, secret=True))
out["second"] = check(inherit.zero_on_fork(64, secret=True))
out["large"] = check(inherit.zero_on_fork(8192, secret=True))
print("RESULT " + json.dumps(out))
"""
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for kind in ("first", "second", "large"):
        r = out[kind]
        assert r["locked"] == r["lo"], (kind, r)
        assert r["works"] and r["children_zero"] and r["dd"] and not r["dumpable"], (kind, r)
    assert out["first"]["locked"] and not out["second"]["locked"] and not out["large"]["locked"], out


@pytest.mark.linux
@pytest.mark.parametrize("error", ["EPERM", "ENOMEM", "EAGAIN"])
def test_mlock_failing_is_reported_not_fatal(error: str) -> None:
    """mlock() refused (shim): locked False, region works, children read zeros."""
    code = """
import json, inherit
from inherit.testing import run_in_child
r = inherit.zero_on_fork(32, secret=True)
r[:] = b"\\x5a" * 32
gen = inherit.generation()
child = run_in_child(lambda: (bytes(r) == bytes(32), inherit.generation() != gen), route="libc.fork")
print(json.dumps({"locked": r.locked, "dumpable": r.dumpable, "intact": bytes(r) == b"\\x5a" * 32,
                  "child": child}))
"""
    proc = run_python(code, env=fault_env(mlock=error))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == {
        "locked": False,
        "dumpable": False,
        "intact": True,
        "child": [True, True],
    }


@pytest.mark.linux
def test_dumpable_tells_the_truth_when_madvise_is_a_no_op() -> None:
    """madvise() that returns 0 for everything (the shim's IGNORE): 'dumpable' must not claim protection."""
    code = """
import ctypes, json, inherit
from inherit.backends.madvise import vm_flags as smaps_flags
r = inherit.zero_on_fork(32, secret=True)
view = r.view()
cell = ctypes.c_char.from_buffer(view)
flags = smaps_flags(ctypes.addressof(cell))
del cell
view.release()
print(json.dumps({"dumpable": r.dumpable, "dd": "dd" in flags}))
"""
    proc = run_python(code, env={**fault_env(madvise="IGNORE"), "INHERIT_BACKEND": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["dumpable"] == (not out["dd"]), out


# -- core dumps -----------------------------------------------------------------

CORE_CODE = r"""
import os, resource, sys
import inherit
resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

def random_fill(region):
    # straight from the kernel into the region: no Python bytes object ever holds the pattern
    view = region.view()
    with open("/dev/urandom", "rb", buffering=0) as f:
        assert f.readinto(view) == len(region)
    hexed = view.hex()
    view.release()
    return hexed

secret_small = inherit.zero_on_fork(32, secret=True)
secret_large = inherit.zero_on_fork(8192, secret=True)
plain = inherit.zero_on_fork(32)
print(random_fill(secret_small), random_fill(secret_large)[:64], random_fill(plain), flush=True)
os.abort()
"""


@pytest.mark.linux
def test_secret_bytes_stay_out_of_a_core_dump(tmp_path: Path) -> None:
    """A real core dump: the plain region's bytes are in it, the secret regions' are not."""
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core dumps are not written to the working directory here (core_pattern {pattern!r})")
    proc = subprocess.run(
        [sys.executable, "-c", CORE_CODE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    cores = sorted(tmp_path.glob("core*"))
    if not cores:
        pytest.skip(f"no core file was written (exit {proc.returncode}); core dumps disabled here?")
    small, large, plain = (bytes.fromhex(h) for h in proc.stdout.split())
    core = cores[0].read_bytes()
    assert plain in core, "the control region is missing from the core: the scan proves nothing"
    assert small not in core, "a secret region's bytes are in the core dump"
    assert large not in core, "a large secret region's bytes are in the core dump"
    print(f"SECRET core dump of {len(core)} bytes: plain region present, secret regions absent")


# -- wiping -----------------------------------------------------------------------


@pytest.mark.parametrize("secret", [False, True])
def test_close_wipes_the_slot(secret: bool) -> None:
    """After close() the slot reads zero in the arena itself, before anyone reuses it."""
    region = inherit.zero_on_fork(48, secret=secret)
    fill(region)
    arena, offset = region._arena, region._offset
    guard = inherit.zero_on_fork(48, secret=secret)  # keeps the arena mapped after close
    region.close()
    assert slot_bytes(arena, offset, arena.slot) == bytes(arena.slot)
    guard.close()


def test_close_wipes_a_large_region_before_unmapping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large region is unmapped on close; its bytes are zero at that moment."""
    seen: list[bool] = []
    real_unmap = _region.Arena.unmap

    def unmap(self: _region.Arena) -> None:
        seen.append(not any(self.mem[:]))
        real_unmap(self)

    monkeypatch.setattr(_region.Arena, "unmap", unmap)
    region = inherit.zero_on_fork(10_000, secret=True)
    fill(region)
    region.close()
    assert seen == [True]


def test_garbage_collection_wipes() -> None:
    """A region that dies unclosed (also inside a reference cycle) is wiped by its finalizer."""
    region = inherit.zero_on_fork(40, secret=True)
    fill(region)
    arena, offset = region._arena, region._offset
    guard = inherit.zero_on_fork(40, secret=True)
    del region
    gc.collect()
    assert slot_bytes(arena, offset, 40) == bytes(40)
    assert arena.slot_free(offset)

    cycle: list[Any] = [inherit.zero_on_fork(40, secret=True)]
    cycle.append(cycle)
    fill(cycle[0])
    arena, offset = cycle[0]._arena, cycle[0]._offset
    del cycle
    gc.collect()
    assert slot_bytes(arena, offset, 40) == bytes(40)
    assert arena.slot_free(offset)
    guard.close()


def test_garbage_collection_with_a_live_view_wipes_now_and_frees_later() -> None:
    """The region dies while a view lives: bytes are wiped at once, the slot is freed only with the view."""
    region = inherit.zero_on_fork(24, secret=True)
    fill(region)
    arena, offset = region._arena, region._offset
    guard = inherit.zero_on_fork(24, secret=True)
    view = region.view()
    del region
    gc.collect()
    assert bytes(view) == bytes(24), "the region died unwiped"
    assert not arena.slot_free(offset), "the slot was freed while a view still points at it"
    others = [inherit.zero_on_fork(24, secret=True) for _ in range(8)]
    assert all(o._offset != offset or o._arena is not arena for o in others)
    view.release()
    del view
    gc.collect()
    inherit.zero_on_fork(1, secret=True).close()  # any slab call drains deferred releases
    assert arena.slot_free(offset)
    for o in others:
        o.close()
    guard.close()


# -- keep_on_fork moves without leaving a copy -------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.parametrize("secret", [False, True])
def test_keep_on_fork_moves_and_wipes_the_old_slot(secret: bool, fork_child: Callable[..., Any]) -> None:
    region = inherit.zero_on_fork(32, secret=secret)
    data = bytes(range(100, 132))
    region[:] = data
    old_arena, old_offset = region._arena, region._offset
    guard = inherit.zero_on_fork(32, secret=secret)
    assert inherit.keep_on_fork(region) is region
    assert region.on_fork == "keep" and region.secret == secret
    assert bytes(region) == data
    assert slot_bytes(old_arena, old_offset, old_arena.slot) == bytes(old_arena.slot)
    assert old_arena.slot_free(old_offset)
    if secret and LINUX:
        assert "dd" in vm_flags(address_of(region)) and not region.dumpable
    assert fork_child(lambda: bytes(region), route="libc.fork") == data
    region.close()
    guard.close()


@pytest.mark.linux
def test_library_makes_no_copies_of_secret_bytes() -> None:
    """Scan the whole process memory: after close, wipe, GC and keep_on_fork the secret exists only
    where a live region holds it. A ``bytes(r)`` copy is found by the same scan (the control)."""
    code = r"""
import ctypes, gc, json, os
import inherit

def address_of(region):
    view = region.view()
    cell = ctypes.c_char.from_buffer(view)
    address = ctypes.addressof(cell)
    del cell
    view.release()
    return address

ref = inherit.zero_on_fork(32, secret=True)  # the one place the pattern is allowed to be
view = ref.view()
with open("/dev/urandom", "rb", buffering=0) as f:
    assert f.readinto(view) == 32
view.release()

def copy(size=32, secret=True):
    region = inherit.zero_on_fork(size, secret=secret)
    src = ref.view()
    region[:32] = src
    src.release()
    return region

def scan(allowed):
    pattern = ref.view()
    skip = sorted([(address_of(ref), address_of(ref) + 32)] + [(a, a + 32) for a in allowed])
    hits = []
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    with open("/proc/self/maps") as f:
        maps = f.read().splitlines()
    for line in maps:
        fields = line.split()
        if "r" not in fields[1] or (len(fields) > 5 and fields[5].startswith("[v")):
            continue
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        segments, start = [], lo
        for a, b in skip:
            if lo <= a < hi:
                segments.append((start, a))
                start = b
        segments.append((start, hi))
        for a, b in segments:
            step = 1 << 20
            for off in range(a, b, step):
                try:
                    data = os.pread(fd, min(step + 31, b - off), off)
                except OSError:
                    break
                i = data.find(pattern)
                while i != -1:
                    hits.append(off + i)
                    i = data.find(pattern, i + 1)
    os.close(fd)
    pattern.release()
    return hits

out = {}
closed = copy(); closed.close()
wiped = copy(); wiped.wipe()
collected = copy(); del collected; gc.collect()
large = copy(10_000); large.close()
moved = copy(); inherit.keep_on_fork(moved)
kept_large = copy(10_000); inherit.keep_on_fork(kept_large)
plain = copy(secret=False); plain.close()
out["hits"] = scan([address_of(moved), address_of(kept_large)])
control = bytes(ref)
out["control_hits"] = len(scan([address_of(moved), address_of(kept_large)]))
print("RESULT " + json.dumps(out))
"""
    proc = run_python(code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["control_hits"] >= 1, "the scan cannot even find a bytes() copy: it proves nothing"
    assert out["hits"] == [], f"copies of the secret left at {[hex(h) for h in out['hits']]}"


# -- lifetime ------------------------------------------------------------------------


def test_close_with_a_live_view_raises_and_keeps_the_memory() -> None:
    """BufferError while any view (or a slice of one) lives; the bytes stay valid and intact."""
    region = inherit.zero_on_fork(16, secret=True)
    fill(region, 0x42)
    view = region.view()
    with pytest.raises(BufferError):
        region.close()
    assert not region.closed
    assert bytes(region) == b"\x42" * 16 and bytes(view) == b"\x42" * 16
    view[0] = 7
    assert region[0] == 7
    part = view[2:5]
    view.release()
    with pytest.raises(BufferError):
        region.close()
    assert bytes(part) == b"\x42" * 3
    part.release()
    if sys.version_info >= (3, 12):
        buffer = memoryview(region)  # type: ignore[arg-type]
        with pytest.raises(BufferError):
            region.close()
        buffer.release()
    region.close()
    assert region.closed


def test_keep_on_fork_with_a_live_view_raises_and_changes_nothing() -> None:
    region = inherit.zero_on_fork(16)
    fill(region, 0x33)
    arena, offset = region._arena, region._offset
    view = region.view()
    with pytest.raises(BufferError):
        inherit.keep_on_fork(region)
    assert (region._arena, region._offset, region.on_fork) == (arena, offset, "zero")
    assert bytes(view) == b"\x33" * 16
    view.release()
    region.close()


CLOSED_ACCESSES: dict[str, Callable[[inherit.Region], Any]] = {
    "r[i]": lambda r: r[0],
    "r[a:b]": lambda r: r[0:2],
    "r[i] = x": lambda r: r.__setitem__(0, 1),
    "r[a:b] = x": lambda r: r.__setitem__(slice(0, 2), b"xy"),
    "bytes(r)": bytes,
    "list(r)": list,
    "r.view()": lambda r: r.view(),
    "r.wipe()": lambda r: r.wipe(),
    "keep_on_fork(r)": inherit.keep_on_fork,
    "with r": lambda r: r.__enter__(),
    "len(r)": len,
}
if sys.version_info >= (3, 12):
    CLOSED_ACCESSES["memoryview(r)"] = memoryview  # type: ignore[assignment]


@pytest.mark.parametrize("size", [32, 8192], ids=["small", "large"])
@pytest.mark.parametrize("access", list(CLOSED_ACCESSES))
def test_every_access_after_close_raises_value_error(access: str, size: int) -> None:
    region = inherit.zero_on_fork(size, secret=True)
    region.close()
    region.close()  # idempotent
    with pytest.raises(ValueError):
        CLOSED_ACCESSES[access](region)


def test_threads_sharing_one_region_never_corrupt_the_slab() -> None:
    """Threads write and check their own stripes of one region, then all race to close it."""
    threads_n, stripe, rounds = 8, 64, 300
    region = inherit.zero_on_fork(threads_n * stripe, secret=True)
    arena, offset = region._arena, region._offset
    errors: list[str] = []
    barrier = threading.Barrier(threads_n)

    def work(k: int) -> None:
        lo, hi = k * stripe, (k + 1) * stripe
        barrier.wait()
        for i in range(rounds):
            pattern = bytes([(k * 31 + i) % 256]) * stripe
            region[lo:hi] = pattern
            if region[lo:hi] != pattern:
                errors.append(f"thread {k} round {i}: stripe corrupted")
                return
        barrier.wait()
        try:
            region.close()
        except Exception as exc:  # close must be idempotent under races
            errors.append(f"thread {k}: close raised {exc!r}")

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    assert region.closed
    assert arena.slot_free(offset) and arena.in_use == 0, "the slot was freed more than once, or never"
    assert len(set(arena.free)) == len(arena.free)


def test_close_racing_with_access_gives_value_error_or_success() -> None:
    """Readers racing a close see the bytes or ValueError, never garbage or a crash."""
    for _ in range(20):
        region = inherit.zero_on_fork(64)
        fill(region, 0x11)
        seen: list[str] = []
        start = threading.Event()

        def reader(
            r: inherit.Region = region, start: threading.Event = start, seen: list[str] = seen
        ) -> None:
            start.wait()
            for _ in range(200):
                try:
                    data = bytes(r)
                except ValueError:
                    seen.append("closed")
                    return
                if data != b"\x11" * 64:
                    seen.append("garbage")
                    return
            seen.append("done")

        workers = [threading.Thread(target=reader) for _ in range(4)]
        for t in workers:
            t.start()
        start.set()
        region.close()
        for t in workers:
            t.join()
        assert "garbage" not in seen, seen


def test_keep_on_fork_racing_readers_never_corrupts() -> None:
    """keep_on_fork() moves a small region while other threads read it: readers get the bytes or a
    ValueError (the view they fetched was released by the move), never other bytes; the old slot is
    wiped and the slab stays consistent."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    spurious = 0
    try:
        for _ in range(50):
            region = inherit.zero_on_fork(32, secret=True)
            fill(region, 0x77)
            old_arena, old_offset = region._arena, region._offset
            stop = threading.Event()
            seen: list[str] = []
            running = threading.Barrier(3)

            def reader(
                r: inherit.Region = region,
                stop: threading.Event = stop,
                seen: list[str] = seen,
                running: threading.Barrier = running,
            ) -> None:
                running.wait()
                while not stop.is_set():
                    try:
                        if bytes(r) != b"\x77" * 32 or r[1:3] != b"\x77\x77" or r[-1] != 0x77:
                            seen.append("other bytes")
                    except ValueError:
                        seen.append("ValueError")

            workers = [threading.Thread(target=reader) for _ in range(2)]
            for t in workers:
                t.start()
            running.wait()
            inherit.keep_on_fork(region)
            stop.set()
            for t in workers:
                t.join()
            assert "other bytes" not in seen
            spurious += seen.count("ValueError")
            assert not region.closed and bytes(region) == b"\x77" * 32
            assert slot_bytes(old_arena, old_offset, 32) == bytes(32)
            region.close()
    finally:
        sys.setswitchinterval(interval)
    print(f"SECRET keep_on_fork racing readers: {spurious} reads of an open region raised ValueError")


@pytest.mark.parametrize("size", [32, 8192], ids=["small", "large"])
def test_secret_region_reads_zero_in_children(
    size: int, fork_route: str, fork_child: Callable[..., Any]
) -> None:
    region = inherit.zero_on_fork(size, secret=True)
    fill(region)
    gen = inherit.generation()
    stale, moved = fork_child(
        lambda: (len(region) - bytes(region).count(0), inherit.generation() != gen), route=fork_route
    )
    assert stale == 0 and moved
    assert bytes(region) == b"\xa5" * size
    region.close()
