"""Real forks over every route: what a child (and a grandchild) sees in zero-on-fork memory.

The routes differ in which hooks run in the child (see :mod:`inherit.testing`): the raw
syscall and libc routes skip Python's at-fork hooks, which is exactly where the getpid idiom
and ``os.register_at_fork`` fall short. Children answer over a pipe; every assertion is made
here, in the parent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import inherit
from inherit import Region, keep_on_fork, zero_on_fork
from inherit.testing import run_in_child

ForkChild = Callable[..., Any]
SIZES = [32, 100, 10000]  # one slab slot, an odd size in a larger slot, a mapping of its own
HOOKLESS_ROUTES = ("libc.fork", "syscall.fork", "syscall.clone")  # Python's at-fork hooks do not run


def _pattern(size: int) -> bytes:
    return bytes((i * 7 + 1) % 256 or 1 for i in range(size))  # no zero byte anywhere


@pytest.fixture(params=SIZES, ids=[f"{n}B" for n in SIZES])
def filled(request: pytest.FixtureRequest) -> Iterator[Region]:
    r = zero_on_fork(request.param)
    r[:] = _pattern(request.param)
    yield r
    r.close()


def _read_then_scribble(r: Region) -> bytes:
    """Report what the child sees, then overwrite it (which must not reach the parent)."""
    seen = bytes(r)
    r[:] = b"\xff" * len(r)
    return seen


def test_child_reads_zeros(filled: Region, fork_route: str, fork_child: ForkChild) -> None:
    seen = fork_child(_read_then_scribble, filled, route=fork_route)
    assert seen == bytes(len(filled))
    assert bytes(filled) == _pattern(len(filled))  # the parent's bytes are untouched


def _slices(r: Region) -> tuple[int, bytearray, bytearray, list[int]]:
    return r[0], r[1:9], r[::3], list(r)[-4:]


def test_child_reads_zeros_through_every_accessor(
    filled: Region, fork_route: str, fork_child: ForkChild
) -> None:
    first, part, stepped, tail = fork_child(_slices, filled, route=fork_route)
    assert first == 0
    assert part == bytes(8)
    assert stepped == bytes(len(range(0, len(filled), 3)))
    assert tail == [0, 0, 0, 0]


def test_kept_region_is_copied(filled: Region, fork_route: str, fork_child: ForkChild) -> None:
    keep_on_fork(filled)
    seen = fork_child(_read_then_scribble, filled, route=fork_route)
    assert seen == _pattern(len(filled))
    assert bytes(filled) == _pattern(len(filled))


def _child_and_grandchild(r: Region, route: str) -> tuple[bytes, bytes, bytes]:
    """In the child: refill the region, fork again by the same route, report all three views."""
    first = bytes(r)
    r[:] = b"\x11" * len(r)
    grandchild = run_in_child(bytes, r, route=route)
    return first, grandchild, bytes(r)


def test_grandchild_reads_zeros(filled: Region, fork_route: str, fork_child: ForkChild) -> None:
    child, grandchild, child_after = fork_child(_child_and_grandchild, filled, fork_route, route=fork_route)
    n = len(filled)
    assert child == bytes(n)
    assert grandchild == bytes(n)
    assert child_after == b"\x11" * n  # the grandchild's wipe is its own
    assert bytes(filled) == _pattern(n)


def _allocate_then_fork(size: int, route: str) -> tuple[bytes, bytes, bytes]:
    r = zero_on_fork(size)
    r[:] = b"\x42" * size
    grandchild = run_in_child(bytes, r, route=route)
    return bytes(r), grandchild, bytes(r)


@pytest.mark.parametrize("size", SIZES)
def test_region_made_in_child_is_zero_in_grandchild(
    size: int, fork_route: str, fork_child: ForkChild
) -> None:
    before, grandchild, after = fork_child(_allocate_then_fork, size, fork_route, route=fork_route)
    assert before == b"\x42" * size
    assert grandchild == bytes(size)
    assert after == b"\x42" * size


def _generations(route: str) -> tuple[int, int, int]:
    mine = inherit.generation()
    grandchild = run_in_child(inherit.generation, route=route)
    return mine, grandchild, inherit.generation()


def test_generation_differs_in_child(fork_route: str, fork_child: ForkChild) -> None:
    parent = inherit.generation()
    assert inherit.generation() == parent  # stable while nothing forks
    child, grandchild, child_again = fork_child(_generations, fork_route, route=fork_route)
    assert child != parent
    assert grandchild != child
    assert child_again == child
    assert inherit.generation() == parent


def _view_then_api(view: memoryview, r: Region) -> tuple[bytes, bytes, bytes]:
    """Read an old memoryview *before* touching the Region API, then through it, then the view again."""
    through_view = view.tobytes()
    through_api = bytes(r)
    return through_view, through_api, view.tobytes()


@pytest.mark.kernel_backend
def test_old_view_reads_zeros_with_kernel_backend(
    filled: Region, fork_route: str, fork_child: ForkChild
) -> None:
    """The kernel wipes the memory itself, so even a view taken before the fork reads zeros."""
    with filled.view() as v:
        seen = fork_child(_view_then_api, v, filled, route=fork_route)
    n = len(filled)
    assert seen == (bytes(n), bytes(n), bytes(n))


def test_old_view_with_getpid_backend_is_a_documented_blind_spot(
    filled: Region, fork_route: str, fork_child: ForkChild
) -> None:
    """Pins what backends/getpid.py documents: only os.fork-style routes wipe eagerly.

    If this starts failing because the getpid backend learned to catch forks from C,
    update the documentation of its blind spots too.
    """
    if inherit.backend() != "getpid":
        pytest.skip(f"getpid-backend behaviour; the backend here is {inherit.backend()!r}")
    n = len(filled)
    with filled.view() as v:
        through_view, through_api, view_after = fork_child(_view_then_api, v, filled, route=fork_route)
    if fork_route in HOOKLESS_ROUTES:
        assert through_view == _pattern(n), "blind spot closed? update the getpid documentation"
    else:  # os.register_at_fork wiped before the child's code ran
        assert through_view == bytes(n)
    assert through_api == bytes(n)  # the API always notices the new PID...
    assert view_after == bytes(n)  # ...and wipes the memory in place
    assert bytes(filled) == _pattern(n)
