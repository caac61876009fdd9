"""No view of a region outlives ``close()``, whatever path produced it.

Everything the library hands out that exposes the bytes (``view()``,
``memoryview(r)``, a direct ``__buffer__`` call) is walked: ``.obj`` chains,
slices of slices, casts, read-only views, ``memoryview(x)``, ``PickleBuffer``,
direct ``__buffer__``/``__release_buffer__`` calls on whatever offers them. For
every object reached that still exposes memory, one of two things must hold:
``close()`` refuses while it lives, or it does not alias the region (a copy). And
once ``close()`` has succeeded, nothing reached can read the memory that the next
region is given.
"""

from __future__ import annotations

import gc
import pickle
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import inherit

PEP688 = sys.version_info >= (3, 12)
SIZE = 48
SECRET = bytes(range(100, 100 + SIZE))


def roots(region: inherit.Region) -> Iterator[tuple[str, Any]]:
    yield "view()", region.view()
    yield "__buffer__(0)", region.__buffer__(0)
    if PEP688:
        yield "memoryview(r)", memoryview(region)


def derived(obj: Any) -> Iterator[tuple[str, Any]]:
    """One step of every way to get from ``obj`` to something else that may expose memory."""
    if isinstance(obj, memoryview):
        yield ".obj", obj.obj
        yield "[:]", obj[:]
        yield "[4:20]", obj[4:20]
        yield "[::2]", obj[::2]
        if obj.c_contiguous:
            yield ".cast('B')", obj.cast("B")
        yield ".toreadonly()", obj.toreadonly()
        yield "memoryview()", memoryview(obj)
        yield "PickleBuffer", pickle.PickleBuffer(obj)
    if isinstance(obj, pickle.PickleBuffer):
        try:
            yield ".raw()", obj.raw()
        except BufferError:  # non-contiguous: nothing to hand out
            pass
    buffer = getattr(type(obj), "__buffer__", None)
    if buffer is not None and not isinstance(obj, (memoryview, pickle.PickleBuffer)):
        try:
            yield ".__buffer__(0)", obj.__buffer__(0)
        except Exception:
            pass
    try:
        if not isinstance(obj, (memoryview, inherit.Region)):
            yield "memoryview(x)", memoryview(obj)
    except TypeError:
        pass
    try:
        if not isinstance(obj, (memoryview, bytes, bytearray, inherit.Region)):
            yield "x[:]", obj[:]
    except Exception:
        pass


def exposes(obj: Any) -> bool:
    """True if ``obj`` gives access to bytes (it may be a copy)."""
    try:
        with memoryview(obj) as view:
            view.tobytes()
        return True
    except (TypeError, ValueError, BufferError):
        return False


def walk(depth: int = 3) -> Iterator[tuple[str, ...]]:
    """Every path of up to ``depth`` steps from each root (as names, replayable)."""
    region = inherit.zero_on_fork(SIZE)
    try:
        frontier: list[tuple[tuple[str, ...], Any]] = [((name,), obj) for name, obj in roots(region)]
        seen = 0
        while frontier:
            path, obj = frontier.pop()
            yield path
            seen += 1
            if len(path) < depth:
                frontier.extend(((*path, step), nxt) for step, nxt in derived(obj))
        del frontier
    finally:
        gc.collect()
        try:
            region.close()
        except BufferError:
            pass


def replay(region: inherit.Region, path: tuple[str, ...]) -> Any:
    """Follow ``path`` from a fresh region and return only its end (everything else dropped)."""
    root = dict(roots(region))[path[0]]
    obj = root
    for step in path[1:]:
        obj = dict(derived(obj))[step]
    del root
    return obj


PATHS = list(walk())


def test_the_walk_reaches_the_interesting_places() -> None:
    names = {" -> ".join(p) for p in PATHS}
    assert "view() -> .obj -> memoryview(x)" in names or "view() -> .obj" in names
    assert "__buffer__(0) -> .obj" in names
    assert len(PATHS) > 50


@pytest.mark.parametrize("path", PATHS, ids=[" -> ".join(p) for p in PATHS])
def test_nothing_reached_outlives_close(path: tuple[str, ...]) -> None:
    region = inherit.zero_on_fork(SIZE)
    region[:] = SECRET
    end: Any = replay(region, path)
    gc.collect()
    if not exposes(end):
        del end
        region.close()
        return
    try:
        region.close()
    except BufferError:
        closed = False
    else:
        closed = True
    if not closed:  # pinned, as promised: release it and close for real
        del end
        gc.collect()
        region.close()
        return
    # close() succeeded while ``end`` lives: it must not alias the freed memory.
    successors = [inherit.zero_on_fork(SIZE) for _ in range(64)]  # the freed slot is reused
    for successor in successors:
        successor[:] = b"\xee" * SIZE
    try:
        with memoryview(end) as view:
            data = view.tobytes()
    except (ValueError, BufferError):
        data = b""
    assert b"\xee" * 4 not in data, f"{' -> '.join(path)} reads another region's bytes after close()"
    for successor in successors:
        successor.close()


@pytest.mark.parametrize("make", [inherit.Region.view, inherit.Region.__buffer__])
def test_export_objects_hand_their_view_to_nobody_else(make: Callable[..., Any]) -> None:
    """The object behind an export cannot be asked for the region's view a second time."""
    region = inherit.zero_on_fork(SIZE)
    view = make(region) if make is inherit.Region.view else make(region, 0)
    inner = view.obj
    for method in ("memoryview", "__buffer__"):
        try:
            leaked = memoryview(inner) if method == "memoryview" else inner.__buffer__(0)
        except (TypeError, BufferError, AttributeError):
            continue
        with leaked:  # whatever it gave, it pinned the region while it lived
            with pytest.raises(BufferError):
                region.close()
        del leaked
    view.release()
    del view, inner
    gc.collect()
    region.close()


def test_release_buffer_calls_cannot_unpin_a_live_slice() -> None:
    """``__release_buffer__`` on whatever offers it: either the region stays pinned, or the
    views it was given are released (unusable) before close() can succeed."""
    region = inherit.zero_on_fork(SIZE)
    view = region.view()
    piece = view[2:10]
    holder = view.obj
    release = getattr(holder, "__release_buffer__", None)
    if release is not None:
        for target in (view, piece):
            try:
                release(target)
            except Exception:
                pass
    try:
        region.close()
    except BufferError:
        assert piece.tobytes() == bytes(8)  # pinned, and still reading the region
        piece.release()
        view.release()
        del holder, release
        gc.collect()
        region.close()
    else:
        for released in (piece, view):
            with pytest.raises(ValueError):
                released.tobytes()


def test_many_views_of_one_region_all_pin_it() -> None:
    region = inherit.zero_on_fork(SIZE)
    views = [region.view()[i : i + 4] for i in range(0, SIZE, 4)]
    for view in views[:-1]:
        view.release()
    with pytest.raises(BufferError):
        region.close()
    views[-1].release()
    region.close()
    assert region.closed


@pytest.mark.parametrize("make", ["view", "__buffer__", "memoryview"])
def test_a_region_dropped_with_its_views_in_a_garbage_cycle(make: str) -> None:
    """CPython before 3.12.7 crashes when its GC clears a memoryview that still has exports
    (gh-77894): the library's own exported views must never be left only in garbage."""
    if make == "memoryview" and not PEP688:
        pytest.skip("memoryview(Region) needs PEP 688 (3.12+)")
    code = f"""
import gc, inherit
from inherit import _region
for i in range(2000):
    r = inherit.zero_on_fork(32)
    r[:] = b"\\x5a" * 32
    v = {{"view": "r.view()", "__buffer__": "r.__buffer__(0)", "memoryview": "memoryview(r)"}}[{make!r}]
    v = eval(v)
    piece = v[1:4]
    cycle = [r, v, piece]
    cycle.append(cycle)
    del r, v, piece, cycle
    if i % 50 == 0:
        gc.collect()
gc.collect()
inherit.zero_on_fork(8).close()  # the first slab operation frees what the cycles left
print(_region.stats()["zero_arenas"], len(_region._orphans), len(_region._exported_views))
"""
    from support import run_python

    proc = run_python(code)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    arenas, orphans, pinned = (int(x) for x in proc.stdout.split())
    assert orphans == 0 and pinned == 0, proc.stdout
    assert arenas <= 2, "slots of regions collected in cycles were never freed"
