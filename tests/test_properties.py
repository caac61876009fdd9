"""Property tests: a Region behaves like a bytearray whose length cannot change.

The same random operations run on a Region and on a model (a bytearray that
refuses length-changing slice assignment with ValueError, as a Region does);
results, exception types and final contents must agree. Known deliberate
differences are encoded in the model and listed here:

- a simple slice assignment of the wrong length raises ValueError (a bytearray resizes);
- slice assignment takes only bytes-like objects, never an iterable of ints (TypeError).
"""

from __future__ import annotations

import array
import ctypes
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inherit

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Index:
    """An object with ``__index__`` (like a numpy integer)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Index({self.value})"


BUFFERS = (bytes, bytearray, memoryview, array.array)


class FixedBytearray:
    """The model: bytearray semantics, except the length never changes."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, slice):
            if isinstance(value, BUFFERS):
                wanted = len(range(*key.indices(len(self.data))))
                # bytearray resizes on a simple slice, and even deletes on an extended
                # one given b"" (ba[::-1] = b""); a fixed length refuses both
                if memoryview(value).nbytes != wanted:
                    raise ValueError("a fixed-length bytearray cannot be resized")
            elif not isinstance(value, (int, str)):  # those two bytearray refuses by itself
                raise TypeError("a Region slice takes only bytes-like objects")
        before = len(self.data)
        self.data[key] = value
        assert len(self.data) == before


def outcome(action: Callable[[], Any]) -> tuple[str, Any]:
    """('ok', result) or ('raise', exception type) for one operation."""
    try:
        result = action()
    except Exception as exc:
        return ("raise", type(exc))
    if isinstance(result, bytearray):
        result = bytes(result)
    return ("ok", result)


def indices(n: int, huge: bool = True) -> st.SearchStrategy[Any]:
    """Valid, out-of-range and (``huge``) beyond-ssize_t indices, as ints or ``__index__`` objects."""
    ints = st.integers(-n - 3, n + 3)
    if huge:
        ints |= st.sampled_from([2**63, -(2**63) - 1, 2**70])
    return ints | ints.map(Index)


def bounds(n: int) -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(-2 * n - 3, 2 * n + 3)


def slices(n: int) -> st.SearchStrategy[slice]:
    steps = st.none() | st.integers(-n - 2, n + 2) | st.sampled_from([2**70, -(2**70)])
    return st.builds(slice, bounds(n), bounds(n), steps)


def byte_values() -> st.SearchStrategy[Any]:
    return (
        st.integers(0, 255)
        | st.integers(-300, 600)
        | st.integers(0, 255).map(Index)
        | st.sampled_from([2**70, b"a", "a", 1.0, None, [1]])
    )


def buffers(length: int) -> st.SearchStrategy[Any]:
    raw = st.binary(min_size=length, max_size=length)
    return st.one_of(
        raw,
        raw.map(bytearray),
        raw.map(memoryview),
        raw.map(lambda b: array.array("B", b)),
    )


@st.composite
def slice_assignments(draw: st.DrawFn, n: int) -> tuple[slice, Any]:
    key = draw(slices(n))
    step = key.step
    wanted = len(range(*key.indices(n))) if step != 0 else 0
    length = draw(st.sampled_from([wanted, wanted, wanted]) | st.integers(0, n + 3))
    if step == 0:  # both arguments bad: bytearray and Region may complain about either first
        value = draw(buffers(length))
    else:
        value = draw(buffers(length) | st.sampled_from([3, "ab"]))
    return key, value


@st.composite
def operations(draw: st.DrawFn, n: int) -> list[tuple[str, Any, Any]]:
    op = st.one_of(
        st.tuples(st.just("get"), indices(n), st.none()),
        st.tuples(st.just("get"), slices(n), st.none()),
        # huge indices with bad values: see test_index_overflow_is_reported_before_the_value
        st.tuples(st.just("set"), indices(n, huge=False), byte_values()),
        st.tuples(st.just("set"), indices(n), st.integers(0, 255)),
        slice_assignments(n).map(lambda kv: ("set", kv[0], kv[1])),
    )
    return draw(st.lists(op, max_size=12))


def apply(target: Any, op: tuple[str, Any, Any]) -> tuple[str, Any]:
    kind, key, value = op
    if kind == "get":
        return outcome(lambda: target[key])
    return outcome(lambda: target.__setitem__(key, value))


@st.composite
def cases(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, Any, Any]]]:
    n = draw(st.integers(1, 70) | st.sampled_from([2048, 2049, 4096]))
    initial = draw(st.binary(min_size=n, max_size=n))
    return initial, draw(operations(n))


@SETTINGS
@given(cases())
def test_region_matches_a_fixed_length_bytearray(case: tuple[bytes, list[tuple[str, Any, Any]]]) -> None:
    """Results, exception types and contents agree after every operation."""
    initial, ops = case
    model = FixedBytearray(initial)
    with inherit.zero_on_fork(len(initial)) as region:
        region[:] = initial
        for op in ops:
            expected = apply(model, op)
            got = apply(region, op)
            assert got == expected, f"{op!r}: region {got}, model {expected}"
            assert bytes(region) == bytes(model.data), f"contents differ after {op!r}"
        assert len(region) == len(model)
        assert list(region) == list(model.data)
        assert region[:] == model.data


@SETTINGS
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), slices(n))))
def test_slices_read_what_bytearray_reads(case: tuple[int, slice]) -> None:
    """Every slice (negative bounds, steps of both signs, out-of-range bounds) reads the same bytes."""
    n, key = case
    data = bytes(range(1, n + 1))
    with inherit.zero_on_fork(n) as region:
        region[:] = data
        assert outcome(lambda: region[key]) == outcome(lambda: bytearray(data)[key])


@SETTINGS
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), slice_assignments(n))))
def test_wrong_lengths_are_refused_without_touching_the_bytes(case: tuple[int, tuple[slice, Any]]) -> None:
    """A refused assignment leaves every byte as it was (no partial write)."""
    n, (key, value) = case
    data = bytes(range(1, n + 1))
    with inherit.zero_on_fork(n) as region:
        region[:] = data
        try:
            region[key] = value
        except (ValueError, TypeError):
            assert bytes(region) == data
        else:
            model = bytearray(data)
            model[key] = value
            assert bytes(region) == bytes(model) and len(model) == n


@SETTINGS
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), indices(n, huge=False), byte_values())))
def test_item_assignment(case: tuple[int, Any, Any]) -> None:
    """Index and value checks match bytearray (IndexError, ValueError, TypeError)."""
    n, key, value = case
    model = bytearray(n)
    with inherit.zero_on_fork(n) as region:
        assert outcome(lambda: region.__setitem__(key, value)) == outcome(
            lambda: model.__setitem__(key, value)
        )
        assert bytes(region) == bytes(model)


# -- cases the model exposed: buffers of other byte formats, tuple keys, overflowing indices ----------


@pytest.mark.parametrize(
    "make",
    [
        lambda b: array.array("b", b),
        lambda b: memoryview(b).cast("c"),
        lambda b: ctypes.create_string_buffer(b, len(b)),
    ],
    ids=["array('b')", "memoryview 'c'", "ctypes char array"],
)
def test_any_byte_buffer_can_be_assigned(make: Callable[[bytes], Any]) -> None:
    """A key coming from C (a ctypes char array) is the typical case; bytearray accepts all of these."""
    data = b"\x01\x02\x7f\x80"
    model = bytearray(4)
    model[:] = make(data)
    with inherit.zero_on_fork(4) as region:
        region[:] = make(data)
        assert bytes(region) == bytes(model)


def test_tuple_keys_are_refused_like_bytearray() -> None:
    with inherit.zero_on_fork(4) as region:
        with pytest.raises(TypeError):
            region[(0,)]
        with pytest.raises(TypeError):
            region[(0,)] = 1


def test_index_overflow_is_reported_before_the_value() -> None:
    with inherit.zero_on_fork(4) as region:
        with pytest.raises(IndexError):
            region[2**63] = 300


def test_documented_differences_from_bytearray() -> None:
    """Pinned so a change is a decision, not an accident: bool bytes and int iterables are refused."""
    with inherit.zero_on_fork(4) as region:
        with pytest.raises(TypeError):
            region[0:2] = [1, 2]
        with pytest.raises(TypeError):
            region[0] = True
        with pytest.raises(ValueError):
            region[0:2] = b"abc"
        assert bytes(region) == bytes(4)
