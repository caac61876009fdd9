"""``per_process_cache``: an ``lru_cache`` whose entries never cross a fork.

Calls are counted per process (a list of PIDs), so a child reports how often the wrapped
function really ran there.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import pytest

import inherit
from inherit.testing import run_in_child


def _counting() -> tuple[Callable[[int], tuple[int, int]], list[int]]:
    """A cached function of one argument that logs the PID of every real call."""
    calls: list[int] = []

    @inherit.per_process_cache
    def square(x: int) -> tuple[int, int]:
        """Square, tagged with the PID that computed it."""
        calls.append(os.getpid())
        return x * x, os.getpid()

    return square, calls


def _calls_here(calls: list[int]) -> int:
    pid = os.getpid()
    return sum(1 for p in calls if p == pid)


def test_entries_from_the_parent_are_recomputed_in_child(fork_route: str) -> None:
    """The child computes its own values instead of reusing the parent's."""
    square, calls = _counting()
    assert square(3) == (9, os.getpid())
    assert square(3) == (9, os.getpid())
    assert square(4) == (16, os.getpid())
    assert _calls_here(calls) == 2

    def child() -> dict[str, Any]:
        first = square(3)
        again = square(3)
        info = tuple(square.cache_info())  # type: ignore[attr-defined]
        return {"first": first, "again": again, "pid": os.getpid(), "calls": _calls_here(calls), "info": info}

    seen = run_in_child(child, route=fork_route)
    assert seen["first"] == (9, seen["pid"]), "the child got the parent's cached value"
    assert seen["again"] == (9, seen["pid"])
    assert seen["calls"] == 1, "the child's own entry was not cached"
    hits, misses, _, currsize = seen["info"]
    assert (hits, misses, currsize) == (1, 1, 1), "cache_info() does not describe the child's cache"
    # The parent's cache is unaffected.
    assert square(3) == (9, os.getpid()) and square(4) == (16, os.getpid())
    assert _calls_here(calls) == 2


def test_cache_info_in_child_reports_an_empty_cache(fork_route: str) -> None:
    """Before its first call in a child, the cache is already the child's: empty, no hits."""
    square, _ = _counting()
    square(1)
    square(1)
    square(2)

    def child() -> tuple[int, ...]:
        return tuple(square.cache_info())  # type: ignore[attr-defined]

    hits, misses, _, currsize = run_in_child(child, route=fork_route)
    assert (hits, misses, currsize) == (0, 0, 0), "cache_info() in the child describes the parent's cache"


def test_grandchild_recomputes_too(fork_route: str) -> None:
    """Each generation starts empty: the grandchild recomputes what the child cached."""
    square, calls = _counting()
    square(5)

    def grandchild() -> tuple[tuple[int, int], int, int]:
        return square(5), os.getpid(), _calls_here(calls)

    def child() -> tuple[Any, ...]:
        square(5)
        route = "os.fork" if fork_route == "multiprocessing" else fork_route
        return run_in_child(grandchild, route=route)

    value, pid, count = run_in_child(child, route=fork_route)
    assert value == (25, pid)
    assert count == 1


def test_cache_info_and_cache_clear() -> None:
    """The lru_cache interface is there and works in the process that filled the cache."""
    square, calls = _counting()
    square(2)
    square(2)
    info = square.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses, info.maxsize, info.currsize) == (1, 1, 128, 1)
    square.cache_clear()  # type: ignore[attr-defined]
    assert square.cache_info().currsize == 0  # type: ignore[attr-defined]
    square(2)
    assert len(calls) == 2


def test_bare_decorator_keeps_metadata() -> None:
    """@per_process_cache wraps like functools.wraps: name, docstring, __wrapped__."""
    square, _ = _counting()
    assert square.__name__ == "square"
    assert square.__doc__ == "Square, tagged with the PID that computed it."
    assert callable(square.__wrapped__)  # type: ignore[attr-defined]


def test_decorator_with_maxsize() -> None:
    """@per_process_cache(maxsize=2) evicts the least recently used entry."""
    calls: list[int] = []

    @inherit.per_process_cache(maxsize=2)
    def ident(x: int) -> int:
        calls.append(x)
        return x

    for x in (1, 2, 3, 1):
        assert ident(x) == x
    assert calls == [1, 2, 3, 1], "entry 1 should have been evicted by 3"
    assert ident.cache_info().maxsize == 2  # type: ignore[attr-defined]
    assert ident.cache_info().currsize == 2  # type: ignore[attr-defined]


def test_decorator_with_empty_parentheses_and_typed() -> None:
    """@per_process_cache() works, and typed=True keeps 1 and 1.0 apart like lru_cache."""
    calls: list[object] = []

    @inherit.per_process_cache()
    def untyped(x: object, y: object) -> object:
        calls.append(x)
        return x

    @inherit.per_process_cache(typed=True)
    def typed(x: object, y: object) -> object:
        calls.append(x)
        return x

    untyped(1, 0)
    untyped(1.0, 0)
    assert len(calls) == 1
    typed(1, 0)
    typed(1.0, 0)
    assert len(calls) == 3


def test_unbounded_cache() -> None:
    """maxsize=None is unbounded, as with lru_cache."""

    @inherit.per_process_cache(maxsize=None)
    def ident(x: int) -> int:
        return x

    for x in range(500):
        ident(x)
    assert ident.cache_info().currsize == 500  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["name", 3.5, [1, 2]])
def test_non_callable_is_a_type_error(value: Any) -> None:
    """Neither a function, a maxsize nor None: refused at once, as lru_cache refuses it."""
    with pytest.raises(TypeError):
        functools.lru_cache(value)
    with pytest.raises(TypeError, match="integer, a callable, or None"):
        inherit.per_process_cache(value)


def test_behaves_like_lru_cache_without_forks() -> None:
    """Same answers and the same hit/miss accounting as functools.lru_cache."""

    def f(x: int, y: int = 0) -> int:
        return x * 10 + y

    ours = inherit.per_process_cache(maxsize=4)(f)
    theirs = functools.lru_cache(maxsize=4)(f)
    for args in [(1,), (2,), (1,), (3, 1), (4,), (5,), (1,), (2, 2)]:
        assert ours(*args) == theirs(*args)
    assert ours.cache_info() == theirs.cache_info()  # type: ignore[attr-defined]
