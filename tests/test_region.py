"""The Region API: bytearray-like access, closing and wiping, bad input, and what gets marked.

Most tests run in this process; the ones about marking read ``/proc/self/smaps`` (what the
kernel really applies) and fork for real to show that neighbouring memory survives.
"""

from __future__ import annotations

import copy
import gc
import pickle
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import inherit
from inherit import Region, keep_on_fork, zero_on_fork

PATTERN = bytes(range(1, 33))
NEEDS_PEP688 = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="memoryview(Region) needs __buffer__ (PEP 688, Python 3.12+)"
)


def _slot_bytes(region: Region) -> bytes:
    """The region's bytes read straight from its arena mapping, bypassing the Region API."""
    start = region._offset
    return bytes(region._arena.mem[start : start + len(region)])


@pytest.fixture
def region() -> Iterator[Region]:
    r = zero_on_fork(32)
    r[:] = PATTERN
    yield r
    r.close()


# -- access ---------------------------------------------------------------------------------------


def test_new_region_is_zeroed_and_sized() -> None:
    for size in (1, 32, 100, 2048, 2049, 10000):
        with zero_on_fork(size) as r:
            assert len(r) == size
            assert bytes(r) == bytes(size)


def test_index_and_negative_index(region: Region) -> None:
    assert region[0] == 1
    assert region[31] == 32
    assert region[-1] == 32
    assert region[-32] == 1
    region[-1] = 0xFF
    assert region[31] == 0xFF
    with pytest.raises(IndexError):
        region[32]
    with pytest.raises(IndexError):
        region[-33]
    with pytest.raises(IndexError):
        region[32] = 0


def test_slices_return_bytearray(region: Region) -> None:
    part = region[2:6]
    assert type(part) is bytearray
    assert part == PATTERN[2:6]
    part[0] = 0  # a copy: the region is unaffected
    assert region[2] == PATTERN[2]
    assert region[:] == PATTERN
    assert region[30:100] == PATTERN[30:]


@pytest.mark.parametrize(
    "key", [slice(None, None, 2), slice(1, 30, 3), slice(None, None, -1), slice(25, 3, -4)]
)
def test_extended_slices(region: Region, key: slice) -> None:
    assert region[key] == bytearray(PATTERN[key])
    replacement = bytes(range(200, 200 + len(PATTERN[key])))
    region[key] = replacement
    expected = bytearray(PATTERN)
    expected[key] = replacement
    assert bytes(region) == bytes(expected)


def test_slice_assignment_accepts_buffers(region: Region) -> None:
    region[0:4] = bytearray(b"abcd")
    region[4:8] = memoryview(b"efgh")
    region[8:12] = PATTERN[:4]
    assert bytes(region[:12]) == b"abcdefgh" + PATTERN[:4]


def test_slice_assignment_wrong_length_is_valueerror(region: Region) -> None:
    with pytest.raises(ValueError, match="fixed length"):
        region[0:4] = b"abc"
    with pytest.raises(ValueError):
        region[:] = bytes(33)
    with pytest.raises(ValueError):
        region[::2] = bytes(15)
    assert bytes(region) == PATTERN  # nothing was written


@pytest.mark.parametrize("value", [5, "abcd", [1, 2, 3, 4], None, 1.5])
def test_slice_assignment_non_bytes_is_typeerror(region: Region, value: object) -> None:
    with pytest.raises(TypeError):
        region[0:4] = value
    assert bytes(region) == PATTERN


@pytest.mark.parametrize("value", [256, -1, 1000])
def test_byte_out_of_range_is_valueerror(region: Region, value: int) -> None:
    with pytest.raises(ValueError):
        region[0] = value
    assert region[0] == PATTERN[0]


@pytest.mark.parametrize("value", [b"x", "x", 1.0, None, True])
def test_byte_of_wrong_type_is_typeerror(region: Region, value: object) -> None:
    with pytest.raises(TypeError):
        region[0] = value


def test_bytes_and_iteration(region: Region) -> None:
    assert bytes(region) == PATTERN
    assert list(region) == list(PATTERN)


def test_view_is_a_writable_memoryview(region: Region) -> None:
    with region.view() as v:
        assert isinstance(v, memoryview)
        assert not v.readonly
        assert len(v) == 32 and v.nbytes == 32
        assert v.tobytes() == PATTERN
        v[0] = 0xAA
        assert region[0] == 0xAA  # same memory, not a copy
        region[1] = 0xBB
        assert v[1] == 0xBB


@NEEDS_PEP688
def test_memoryview_of_region(region: Region) -> None:
    with memoryview(region) as v:  # type: ignore[arg-type]
        assert not v.readonly
        assert v.tobytes() == PATTERN
        v[0] = 7
        assert region[0] == 7


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12+ has __buffer__ (PEP 688)")
def test_memoryview_before_312_is_typeerror(region: Region) -> None:
    """The documented contract: below 3.12 buffer access goes through ``view()``."""
    with pytest.raises(TypeError):
        memoryview(region)  # type: ignore[arg-type]


def test_with_block_closes() -> None:
    with zero_on_fork(16) as r:
        assert isinstance(r, Region)
        assert not r.closed
        r[:] = bytes(range(16))
    assert r.closed


def test_with_block_closes_on_error() -> None:
    with pytest.raises(RuntimeError), zero_on_fork(16) as r:
        raise RuntimeError("boom")
    assert r.closed


# -- closing wipes ---------------------------------------------------------------------------------


def test_close_wipes_arena_memory() -> None:
    """The bytes are zeroed in the mapping itself, not just made unreachable."""
    keeper = zero_on_fork(32)  # keeps the arena mapped after the region's slot is freed
    r = zero_on_fork(32)
    assert r._arena is keeper._arena
    r[:] = PATTERN
    assert _slot_bytes(r) == PATTERN
    arena, offset = r._arena, r._offset
    r.close()
    assert bytes(arena.mem[offset : offset + 32]) == bytes(32)
    keeper.close()


def test_reused_slot_reads_zeros() -> None:
    keeper = zero_on_fork(32)
    r = zero_on_fork(32)
    r[:] = PATTERN
    where = (r._arena, r._offset)
    r.close()
    again = zero_on_fork(32)
    assert (again._arena, again._offset) == where  # the freed slot is handed out again
    assert bytes(again) == bytes(32)
    again.close()
    keeper.close()


def test_close_of_large_region_unmaps() -> None:
    r = zero_on_fork(10000)
    r[:] = b"\x5a" * 10000
    mem = r._arena.mem
    r.close()
    assert mem.closed


def test_close_is_idempotent(region: Region) -> None:
    region.close()
    region.close()
    assert region.closed


def test_wipe_keeps_region_open(region: Region) -> None:
    region.wipe()
    assert not region.closed
    assert bytes(region) == bytes(32)


CLOSED_OPERATIONS: dict[str, Callable[[Region], Any]] = {
    "len": len,
    "getitem": lambda r: r[0],
    "getslice": lambda r: r[0:2],
    "setitem": lambda r: r.__setitem__(0, 1),
    "setslice": lambda r: r.__setitem__(slice(0, 2), b"ab"),
    "bytes": bytes,
    "iter": list,
    "view": lambda r: r.view(),
    "wipe": lambda r: r.wipe(),
    "with": lambda r: r.__enter__(),
    "keep_on_fork": keep_on_fork,
}
if sys.version_info >= (3, 12):
    CLOSED_OPERATIONS["memoryview"] = memoryview


@pytest.mark.parametrize("op", CLOSED_OPERATIONS.values(), ids=list(CLOSED_OPERATIONS))
def test_every_operation_on_closed_region_is_valueerror(op: Callable[[Region], Any]) -> None:
    """Like a closed mmap or memoryview: ``len()`` included."""
    r = zero_on_fork(8)
    r.close()
    with pytest.raises(ValueError):
        op(r)


def test_close_with_live_view_is_buffererror(region: Region) -> None:
    v = region.view()
    with pytest.raises(BufferError):
        region.close()
    assert not region.closed
    assert v.tobytes() == PATTERN  # the view still points at live, unwiped memory
    v.release()
    region.close()
    assert region.closed


def test_close_with_derived_view_is_buffererror(region: Region) -> None:
    v = region.view()
    part = v[4:8]
    v.release()
    with pytest.raises(BufferError):
        region.close()
    part.release()
    region.close()


@NEEDS_PEP688
def test_close_with_live_memoryview_is_buffererror(region: Region) -> None:
    v = memoryview(region)  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        region.close()
    assert v.tobytes() == PATTERN
    v.release()
    region.close()
    assert region.closed


def test_dropped_region_is_wiped() -> None:
    keeper = zero_on_fork(32)
    r = zero_on_fork(32)
    r[:] = PATTERN
    arena, offset = r._arena, r._offset
    assert arena is keeper._arena
    del r
    gc.collect()
    assert bytes(arena.mem[offset : offset + 32]) == bytes(32)
    keeper.close()


def test_dropped_region_with_live_view_is_wiped_and_slot_not_reused() -> None:
    """A view that outlives its region reads zeros and never aliases a newer region."""
    keeper = zero_on_fork(32)
    r = zero_on_fork(32)
    r[:] = PATTERN
    v = r.view()
    where = (r._arena, r._offset)
    del r
    gc.collect()
    assert v.tobytes() == bytes(32)
    others = [zero_on_fork(32) for _ in range(4)]
    assert all((o._arena, o._offset) != where for o in others)
    for o in others:
        o[:] = b"\xee" * 32
    assert v.tobytes() == bytes(32)
    v.release()
    for o in others:
        o.close()
    keeper.close()


# -- identity ---------------------------------------------------------------------------------------


def test_repr_never_contains_the_bytes() -> None:
    secret = b"TOPSECRET-0123456789abcdef-XYZW!"
    with zero_on_fork(32) as r:
        r[:] = secret
        text = repr(r) + str(r)
        for needle in (secret, secret[:8]):
            assert needle.decode() not in text
            assert needle.hex() not in text
            assert repr(needle)[2:-1] not in text
        assert "size=32" in text
    assert "closed" in repr(r)


@pytest.mark.parametrize(
    "operation",
    [pickle.dumps, lambda r: pickle.dumps(r, protocol=5), copy.copy, copy.deepcopy],
    ids=["pickle", "pickle5", "copy", "deepcopy"],
)
def test_region_cannot_be_pickled_or_copied(region: Region, operation: Callable[[Region], Any]) -> None:
    with pytest.raises(TypeError):
        operation(region)


def test_region_cannot_be_made_directly() -> None:
    with pytest.raises(TypeError):
        Region()


def test_on_fork_property(region: Region) -> None:
    assert region.on_fork == "zero"
    assert keep_on_fork(region) is region
    assert region.on_fork == "keep"
    assert bytes(region) == PATTERN  # moving to kept memory preserves the bytes
    assert keep_on_fork(region) is region  # idempotent


def test_keep_on_fork_large_region() -> None:
    with zero_on_fork(10000) as r:
        r[:] = b"\x33" * 10000
        keep_on_fork(r)
        assert r.on_fork == "keep"
        assert bytes(r) == b"\x33" * 10000


def test_keep_on_fork_small_region_with_live_view_is_buffererror(region: Region) -> None:
    v = region.view()
    with pytest.raises(BufferError):
        keep_on_fork(region)
    assert region.on_fork == "zero"
    assert v.tobytes() == PATTERN
    v.release()
    keep_on_fork(region)
    assert region.on_fork == "keep"
    assert bytes(region) == PATTERN


def test_secret_region() -> None:
    with zero_on_fork(32, secret=True) as s, zero_on_fork(32) as plain:
        assert s.secret and not plain.secret
        assert s._arena is not plain._arena  # never share pages with ordinary memory
        s[:] = PATTERN
        assert bytes(s) == PATTERN


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, -4096, -(2**70)])
def test_nonpositive_size_is_valueerror(size: int) -> None:
    with pytest.raises(ValueError):
        zero_on_fork(size)


@pytest.mark.parametrize("size", [True, False, 1.5, 8.0, "8", None, b"x", [8]])
def test_non_int_size_is_typeerror(size: object) -> None:
    with pytest.raises(TypeError):
        zero_on_fork(size)  # type: ignore[arg-type]


def test_absurd_size_is_overflowerror() -> None:
    with pytest.raises(OverflowError):
        zero_on_fork(2**62)
    with pytest.raises(OverflowError):
        zero_on_fork(2**64)


def test_huge_size_is_memoryerror_or_overflowerror() -> None:
    with pytest.raises((MemoryError, OverflowError)):
        zero_on_fork(2**50)


@pytest.mark.parametrize("secret", [1, 0, None, "yes"])
def test_secret_must_be_bool(secret: object) -> None:
    with pytest.raises(TypeError):
        zero_on_fork(8, secret=secret)  # type: ignore[arg-type]


@pytest.mark.parametrize("obj", [b"x", None, bytearray(8), memoryview(b"x"), 8])
def test_keep_on_fork_of_non_region_is_typeerror(obj: object) -> None:
    with pytest.raises(TypeError):
        keep_on_fork(obj)  # type: ignore[arg-type]


def test_keep_on_fork_of_closed_region_is_valueerror() -> None:
    r = zero_on_fork(8)
    r.close()
    with pytest.raises(ValueError):
        keep_on_fork(r)


# -- only the library's own memory is marked -------------------------------------------------------

_VMA_HEADER = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) ")


def _wf_vmas() -> list[tuple[int, int]]:
    """Address ranges whose VmFlags include ``wf`` (wipe on fork), from /proc/self/smaps."""
    with open("/proc/self/smaps", "rb") as f:
        text = f.read()
    found: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in text.splitlines():
        match = _VMA_HEADER.match(line)
        if match:
            current = (int(match.group(1), 16), int(match.group(2), 16))
        elif line.startswith(b"VmFlags:") and current is not None:
            if b"wf" in line.split()[1:]:
                found.append(current)
    return found


def _address(buffer: Any) -> int:
    from inherit._native import ffi

    return int(ffi.cast("uintptr_t", ffi.from_buffer(buffer)))


def _own_mappings() -> list[tuple[int, int]]:
    """Every mapping the library marked zero-on-fork: its arenas and the fork-detection page."""
    from inherit import _region, _runtime

    mems = [arena.mem for arena in list(_region._zero_arenas.values())]
    selection = _runtime.selection()
    if selection.page is not None:
        mems.append(selection.page)
    return [(_address(m), _address(m) + len(m)) for m in mems]


def _covered(vma: tuple[int, int], own: list[tuple[int, int]]) -> bool:
    """True if ``own`` ranges cover all of ``vma`` (the kernel merges adjacent marked mappings)."""
    position = vma[0]
    for start, end in sorted(own):
        if start <= position < end:
            position = end
    return position >= vma[1]


@pytest.mark.linux
@pytest.mark.kernel_backend
def test_only_own_mappings_are_marked() -> None:
    regions = [zero_on_fork(n) for n in (1, 16, 32, 100, 2048, 2049, 10000)]
    regions.append(zero_on_fork(32, secret=True))
    kept = zero_on_fork(5000)
    keep_on_fork(kept)
    small_kept = zero_on_fork(64)
    keep_on_fork(small_kept)
    try:
        own = _own_mappings()
        marked = _wf_vmas()
        assert marked, "a kernel backend is active but nothing is marked"
        stray = [(hex(a), hex(b)) for a, b in marked if not _covered((a, b), own)]
        assert not stray, f"wipe-on-fork mappings the library does not own: {stray}"
        # And the converse: everything the library thinks is marked really is.
        for start, end in own:
            assert any(a <= start and end <= b for a, b in marked), hex(start)
        # Memory handed back to keep-on-fork is no longer marked.
        for r in (kept, small_kept):
            address = _address(r._arena.mem) + r._offset
            assert not any(a <= address < b for a, b in marked)
    finally:
        for r in [*regions, kept, small_kept]:
            r.close()


def _read_neighbours(neighbours: list[bytearray], r: Region) -> tuple[list[bytes], bytes]:
    return [bytes(b) for b in neighbours], bytes(r)


def test_neighbouring_memory_survives_fork(fork_route: str, fork_child: Callable[..., Any]) -> None:
    """Objects allocated right next to regions keep their content in a child (nothing else is wiped)."""
    neighbours: list[bytearray] = []
    regions: list[Region] = []
    for size in (16, 32, 100, 3000, 10000):
        before = bytearray(b"\xc3" * size)
        r = zero_on_fork(size)
        r[:] = b"\x3c" * size
        after = bytearray(b"\xa5" * size)
        neighbours += [before, after]
        regions.append(r)
    try:
        seen, first = fork_child(_read_neighbours, neighbours, regions[0], route=fork_route)
        assert seen == [bytes(b) for b in neighbours]
        assert first == bytes(16)
    finally:
        for r in regions:
            r.close()


@pytest.mark.linux
@pytest.mark.kernel_backend
def test_many_small_regions_share_few_mappings() -> None:
    """5000 keys of 32 bytes live in a handful of arenas, not 5000 mappings."""
    regions = [zero_on_fork(32) for _ in range(5000)]
    try:
        arenas = {id(r._arena) for r in regions}
        assert len(arenas) <= 4
        marked = _wf_vmas()
        addresses = [_address(r._arena.mem) + r._offset for r in regions]
        holding = {vma for vma in marked for address in addresses if vma[0] <= address < vma[1]}
        assert 1 <= len(holding) <= len(arenas)
        assert len(marked) < 50
    finally:
        for r in regions:
            r.close()


def test_a_region_never_opened_has_a_repr_and_refuses_use() -> None:
    raw = inherit.Region.__new__(inherit.Region)
    assert repr(raw) == "<inherit.Region never opened>"
    with pytest.raises(ValueError, match="never opened"):
        len(raw)
    raw.close()  # nothing to free: idempotent as on a closed region


def test_buffer_flags_must_be_an_integer() -> None:
    region = inherit.zero_on_fork(16)
    with pytest.raises(TypeError, match="flags must be an int"):
        region.__buffer__("0")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        region.__buffer__(1.5)  # type: ignore[arg-type]
    region.close()


@pytest.mark.parametrize("bad", ["never", "", None, 0, b"zero"])
def test_on_restore_takes_keep_or_zero(bad: object) -> None:
    error = ValueError if isinstance(bad, str) else TypeError
    with pytest.raises(error, match="on_restore must be 'keep' or 'zero'"):
        inherit.zero_on_fork(16, on_restore=bad)  # type: ignore[arg-type]
