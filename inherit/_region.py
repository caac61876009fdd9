"""``Region``: memory that reads as zeros in any forked child."""

from __future__ import annotations

import sys
from _weakref import ref as _weak

from . import _detect, _select, _slab

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType
    from typing import Any, NoReturn, SupportsIndex, overload

_MAX_SIZE = sys.maxsize // 2
# Weak references to the views of regions that died while views of them lived.
_orphans: dict[int, object] = {}


def _as_index(value: object, what: str) -> int:
    """operator.index() without importing operator; bools are refused."""
    if type(value) is int:
        return value
    index = getattr(type(value), "__index__", None)
    if index is None or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    result = index(value)
    if not isinstance(result, int):
        raise TypeError(f"__index__ returned non-int (type {type(result).__name__})")
    return int(result)


def _item_index(key: object) -> int:
    """bytearray's rule for an item key: an int or an object with __index__ (not a tuple, not ...)."""
    if type(key) is int:
        index = key
    else:
        to_index = getattr(type(key), "__index__", None)
        if to_index is None:
            raise TypeError(f"Region indices must be integers or slices, not {type(key).__name__}")
        index = to_index(key)
        if not isinstance(index, int):
            raise TypeError(f"__index__ returned non-int (type {type(index).__name__})")
    if not -sys.maxsize - 1 <= index <= sys.maxsize:
        raise IndexError("cannot fit 'int' into an index-sized integer")
    return index


def _checked_size(size: object) -> int:
    n = _as_index(size, "size")
    if n <= 0:
        raise ValueError(f"size must be positive, got {n}")
    if n > _MAX_SIZE:
        raise OverflowError(f"size {n} is larger than any mapping can be")
    return n


class Region:
    """A fixed-size, writable block of bytes that reads as zeros in forked children.

    Made by :func:`inherit.zero_on_fork`. Behaves like a ``bytearray`` of fixed
    length for ``len``, indexing, slicing and slice assignment (slices return a
    ``bytearray``). ``memoryview(r)`` works on Python 3.12+; :meth:`view` on every
    version. Closing wipes the bytes; a region whose views are still alive
    cannot be closed (``BufferError``), so no view ever outlives its memory.
    """

    __slots__ = ("__weakref__", "_arena", "_mv", "_offset", "_size")

    _mv: memoryview | None
    _arena: _slab.Arena
    _offset: int
    _size: int

    def __init__(self) -> None:
        raise TypeError("use inherit.zero_on_fork(size) to make a Region")

    # -- access -----------------------------------------------------------
    def _live(self) -> memoryview:
        try:
            mv = self._mv
        except AttributeError:  # made with Region.__new__, not zero_on_fork()
            raise ValueError("this Region was never opened; use inherit.zero_on_fork()") from None
        if mv is None:
            raise ValueError("operation on a closed Region")
        if _detect._kernel is False:
            _detect.generation()  # lazy backend: wipe first if this is a new process
        return mv

    def __len__(self) -> int:
        if self._mv is None:
            raise ValueError("operation on a closed Region")
        return self._size

    if TYPE_CHECKING:

        @overload
        def __getitem__(self, key: SupportsIndex) -> int: ...
        @overload
        def __getitem__(self, key: slice) -> bytearray: ...

    def __getitem__(self, key: SupportsIndex | slice) -> int | bytearray:
        mv = self._live()
        if isinstance(key, slice):
            return bytearray(mv[key])
        index = _item_index(key)
        try:
            return mv[index]
        except IndexError:
            raise IndexError("Region index out of range") from None

    if TYPE_CHECKING:

        @overload
        def __setitem__(self, key: SupportsIndex, value: SupportsIndex) -> None: ...
        @overload
        def __setitem__(self, key: slice, value: Any) -> None: ...

    def __setitem__(self, key: SupportsIndex | slice, value: Any) -> None:
        mv = self._live()
        if isinstance(key, slice):
            if isinstance(value, int):
                raise TypeError("can assign only bytes-like objects to a Region slice")
            try:
                src = memoryview(value)
            except TypeError:
                raise TypeError(
                    f"can assign only bytes-like objects to a Region slice, not {type(value).__name__}"
                ) from None
            with src:
                if src.format != "B" or src.ndim != 1:  # 'b', 'c', ctypes '<c', wider items
                    src = src.cast("B")
                wanted = len(range(*key.indices(self._size)))
                if src.nbytes != wanted:
                    raise ValueError(
                        f"a Region has a fixed length: slice needs {wanted} bytes, got {src.nbytes}"
                    )
                mv[key] = src
            return
        index = _item_index(key)  # first, as bytearray does
        byte = _as_index(value, "a byte")
        if not 0 <= byte <= 255:
            raise ValueError("byte must be in range(0, 256)")
        try:
            mv[index] = byte
        except IndexError:
            raise IndexError("Region index out of range") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._live().tolist())

    def __bytes__(self) -> bytes:
        return self._live().tobytes()

    def view(self) -> memoryview:
        """A writable memoryview of the region (any Python version).

        The region cannot be closed while the view (or any view derived from
        it) is alive; release it with ``view.release()`` or a ``with`` block.
        """
        from pickle import PickleBuffer

        # Each PickleBuffer level takes an export of the view below it, so
        # close() sees every view derived from this one. Two levels keep the
        # region's own view out of reach: ``.obj`` is the private middle view,
        # and even its slices pin the region.
        return memoryview(PickleBuffer(memoryview(PickleBuffer(self._live()))))

    def __buffer__(self, flags: int, /) -> memoryview:
        return self._live()

    def __release_buffer__(self, view: memoryview, /) -> None:
        """The view is released by the memoryview machinery itself."""

    def wipe(self) -> None:
        """Set every byte to zero (the region stays open)."""
        self._live()[:] = bytes(self._size)

    # -- state --------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._mv is None

    @property
    def on_fork(self) -> str:
        """``"zero"`` or ``"keep"``: what a forked child sees."""
        self._live()
        return "zero" if self._arena.zero else "keep"

    @property
    def secret(self) -> bool:
        """True for regions made with ``secret=True``."""
        self._live()
        return self._arena.secret

    @property
    def locked(self) -> bool:
        """True if the pages are locked in RAM (secret regions, best effort)."""
        self._live()
        return self._arena.locked

    @property
    def dumpable(self) -> bool:
        """False if the pages are excluded from core dumps."""
        self._live()
        return not self._arena.nodump

    def close(self) -> None:
        """Wipe the bytes and free them. Idempotent.

        Raises BufferError while a memoryview of the region is alive.
        """
        _generation()  # settle a fork first: it replaces the slab lock
        with _slab._lock:
            mv = self._mv
            if mv is None:
                return
            try:
                mv.release()
            except BufferError:
                raise BufferError(
                    "cannot close a Region while memoryviews of it exist; release them first"
                ) from None
            self._mv = None
            _slab.release_locked(self._arena, self._offset)

    def __enter__(self) -> Region:
        self._live()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            mv = self._mv
        except AttributeError:  # construction failed before the view was set
            return
        if mv is None:
            return
        mv[:] = bytes(self._size)  # wipe now, whatever happens to the slot
        try:
            mv.release()
        except BufferError:
            # Views outlive the region (possible before 3.12): free on their death.
            arena, offset = self._arena, self._offset

            def free(weak: object) -> None:
                _orphans.pop(id(weak), None)
                _slab.release_later(arena, offset)

            weak = _weak(mv, free)
            _orphans[id(weak)] = weak  # (a writable memoryview's weakref is unhashable)
            return
        self._mv = None
        # Never block in a finalizer: it may run while this thread holds the lock.
        _slab.release_later(self._arena, self._offset)

    def __repr__(self) -> str:
        state = "closed" if self._mv is None else f"on_fork={self.on_fork!r}"
        return f"<inherit.Region size={self._size} {state}{' secret' if self._arena.secret else ''}>"

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("a Region cannot be pickled or copied: that would copy its bytes")

    def __copy__(self) -> NoReturn:
        raise TypeError("a Region cannot be copied: that would copy its bytes")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("a Region cannot be copied: that would copy its bytes")


_new_region = object.__new__
_generation = _detect.generation


def zero_on_fork(size: int, *, secret: bool = False) -> Region:
    """Allocate ``size`` zero bytes that read as zeros in every forked child.

    ``secret=True`` also keeps the pages out of core dumps and tries to lock
    them in RAM (see :attr:`Region.locked`).
    """
    if type(size) is not int or size <= 0 or size > _MAX_SIZE:
        size = _checked_size(size)
    if secret is not False and secret is not True:
        raise TypeError("secret must be True or False")
    arena, offset = _slab.allocate(size, True, secret)  # selects the backend on first use
    region = _new_region(Region)
    region._arena = arena
    region._offset = offset
    region._size = size
    region._mv = arena.root[offset : offset + size]
    return region


def keep_on_fork(region: Region) -> Region:
    """Undo :func:`zero_on_fork`: children inherit a copy of ``region`` again.

    Small regions share pages with others, so their bytes move to memory that
    children inherit; that needs every view of the region released first
    (``BufferError`` otherwise), and no other thread using the region while it
    moves. Returns the region.
    """
    if not isinstance(region, Region):
        raise TypeError(f"keep_on_fork() takes a Region, not {type(region).__name__}")
    mv = region._live()
    arena = region._arena
    if not arena.zero:
        return region
    if arena.pool is None:  # a mapping of its own: just re-mark it
        _select.current().backend.mark_keep(arena.mem)
        arena.zero = False
        _slab._zero_arenas.discard(arena)
        return region
    with _slab.lock():
        if region._mv is not mv:  # closed or moved by another thread meanwhile
            raise ValueError("the Region was closed or moved during keep_on_fork()")
        new_arena, new_offset = _slab.allocate_locked(_slab.slot_size(region._size), False, arena.secret)
        new_mv = new_arena.root[new_offset : new_offset + region._size]
        new_mv[:] = mv
        try:
            mv.release()
        except BufferError:
            new_mv.release()
            _slab.release_locked(new_arena, new_offset)
            raise BufferError(
                "keep_on_fork() must move a small Region; release its memoryviews first"
            ) from None
        _slab.release_locked(arena, region._offset)
        region._arena, region._offset, region._mv = new_arena, new_offset, new_mv
    return region
