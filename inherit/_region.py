"""``Region``: memory that reads as zeros in any forked child, on a slab of shared pages.

One page per 32-byte key would cost 128x the memory and a VMA each, so small
regions share pages: sizes are rounded up to a power-of-two slot in 64 KiB
arenas; larger ones get a mapping of their own. The kernel marks whole pages,
so zero-on-fork and keep-on-fork memory never share an arena, nor do secret
and ordinary memory.

The slab's books are guarded by the runtime's process lock, taken only after a
fork has been settled and held only for a few list operations. A finalizer
wipes at once; it frees the slot at once too, unless its own thread holds the
lock (the books may be mid-update) or a fork is not settled yet: then the slot
waits on a list that the next slab operation drains. Wiping never needs memory
in proportion to the region.

Views: the region's own memoryview is never handed out. ``view()`` and
``memoryview(r)`` give a memoryview whose every derivative (slices, casts,
``.obj`` chains, direct ``__buffer__`` calls) holds an export on it, so
``close()`` refuses while any of them lives.
"""

import mmap
import sys

from . import _runtime as _rt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType
    from typing import Any, NoReturn, SupportsIndex, overload

MIN_SLOT = 16
MAX_SLOT = 2048
# mmap is loaded here, not on first use: under an address-space limit its dlopen
# would fail there as an ImportError rather than the MemoryError users expect.
PAGE_SIZE = mmap.PAGESIZE
ARENA_SIZE = max(64 * 1024, PAGE_SIZE)
_MAX_SIZE = sys.maxsize // 2
_CHUNK = 64 * 1024
_zeros: "list[memoryview]" = []  # one chunk of zeros, made on first use


def _slot_table() -> "list[int]":
    """size -> slot for every small size (allocation is on the hot path)."""
    table = [0] + [MIN_SLOT] * MIN_SLOT
    slot = MIN_SLOT
    while slot < MAX_SLOT:
        table += [slot * 2] * slot
        slot *= 2
    return table


_SLOT_OF = _slot_table()


def slot_size(size: int) -> int:
    """The slot a small region of ``size`` bytes occupies (0 if it gets a mapping of its own)."""
    return _SLOT_OF[size] if size <= MAX_SLOT else 0


def _wipe(view: memoryview, _zeros: "list[memoryview]" = _zeros, _chunk: int = _CHUNK) -> None:
    """Zero ``view`` in bounded chunks: never a copy the size of the region.

    What it uses is bound at definition: finalizers call it at interpreter
    shutdown, when module globals may be gone.
    """
    size = len(view)
    if not _zeros:
        _zeros.append(memoryview(bytes(_chunk)))
    zeros = _zeros[0]
    start = 0
    while start < size:
        end = min(start + _chunk, size)
        view[start:end] = zeros[: end - start]
        start = end


# -- arenas ---------------------------------------------------------------------------------------


class Arena:
    """A mapping: either slots of one size for small regions, or one large region."""

    __slots__ = (
        "excluded_from_dumps",
        "free",
        "fresh",
        "key",
        "mem",
        "mlocked",
        "root",
        "secret",
        "size",
        "slot",
        "zero",
        "zeros",
    )

    def __init__(self, size: int, slot: int, zero: bool, secret: bool, key: "int | None") -> None:
        backend = _rt.selection().backend
        if secret:
            from .backends._secret import map_secret, protect

            mem, address = map_secret(backend, size)
        else:
            mem, address = backend.allocate(size), None
        try:
            if zero:
                try:
                    backend.mark_zero(mem)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"cannot mark new memory zero-on-fork ({backend.name}): {exc.strerror}"
                    ) from exc
            self.excluded_from_dumps = self.mlocked = False
            if secret:
                self.excluded_from_dumps, self.mlocked = protect(mem, address)
        except BaseException:
            mem.close()
            raise
        self.mem = mem
        self.root = memoryview(mem)
        self.size = size
        self.slot = slot
        self.key = key  # None: a large region's own mapping
        self.zero = zero
        self.secret = secret
        # Slots come from ``free`` (given back, already wiped) or, once it is empty,
        # from ``fresh``, the first slot never handed out: no list of every slot.
        self.free: list[int] = []
        self.fresh = 0
        self.zeros = _zeros_for(slot) if key is not None else b""

    @property
    def in_use(self) -> int:
        """Slots handed out and not given back."""
        return self.fresh // self.slot - len(self.free)

    def slot_free(self, offset: int) -> bool:
        """True if the slot at ``offset`` is not handed out."""
        return offset in self.free or offset >= self.fresh

    def unmap(self) -> None:
        _zero_arenas.pop(id(self), None)
        self.root.release()
        self.mem.close()


# Arenas with free slots, per slot | zero << 16 | secret << 17; guarded by the process lock.
_pools: "dict[int, list[Arena]]" = {}
# Every zero-on-fork arena, for the getpid backend's wipe in a new process.
_zero_arenas: "dict[int, Arena]" = {}
# Slots released by finalizers (already wiped), returned by the next slab operation.
_pending: "list[tuple[Arena, int]]" = []
# CPython before 3.12.7 crashes when its cyclic GC clears a memoryview that still
# has exports (gh-77894): that happens to any memoryview only reachable from a
# garbage cycle, such as a region and its views dropped together. The library's
# own exported memoryviews are therefore kept reachable from here until their
# exports are gone.
_GC_CLEARS_EXPORTED_VIEWS = sys.version_info < (3, 12, 7)
_exported_views: "dict[int, memoryview]" = {}
# The views that memoryview(region) is built on (3.12.0-3.12.6): the library's
# reference is dropped once it is the only one left.
_buffer_exports: "list[memoryview]" = []
# Regions that died while exports of them lived: (their view, arena, offset). The
# slot is freed by the first slab operation after the last export is released.
_orphans: "list[tuple[memoryview, Arena, int]]" = []
_zero_slots: "dict[int, bytes]" = {}


def _reap() -> None:
    """Free the slots of dead regions whose exports are gone; drop views nobody else holds."""
    for entry in tuple(_orphans):
        view, arena, offset = entry
        try:
            view.release()
        except BufferError:
            continue  # still exported
        try:
            _orphans.remove(entry)
        except ValueError:
            continue  # another thread freed it
        _exported_views.pop(id(view), None)
        _release_later(arena, offset)
    if _buffer_exports:
        _buffer_exports[:] = [v for v in _buffer_exports if _getrefcount(v) > _ONLY_OURS]


_getrefcount = sys.getrefcount
# What the comprehension above counts for an entry when the list is its only holder.
_ONLY_OURS = next(_getrefcount(v) for v in [memoryview(b"")])


def _take_slot(slot: int, zero: bool, secret: bool) -> "tuple[Arena, int]":
    if not _rt.flag[0]:
        _rt.settle()  # a fork first: the books belong to this process's lock
    if _orphans:
        _reap()
    lock = _rt.lock
    if _is_owned(lock):
        # Re-entered from a finalizer or signal handler while this thread holds the
        # lock: the books may be mid-update, so use a mapping of its own instead.
        return _own_mapping(slot, zero, secret), 0
    key = slot | zero << 16 | secret << 17
    with lock:
        if _pending:
            _drain()
        pool = _pools.get(key)
        while pool:
            arena = pool[-1]
            free = arena.free
            if free:
                offset = free.pop()
            else:
                offset = arena.fresh
                if offset >= arena.size:
                    pool.pop()  # exhausted: left half-updated by a thread lost to a fork from C
                    continue
                arena.fresh = offset + slot
            if not free and arena.fresh >= arena.size:
                pool.pop()
            return arena, offset
    arena = Arena(ARENA_SIZE, slot, zero, secret, key)  # outside the lock: syscalls, maybe /proc
    with lock:
        arena.fresh = slot
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = []
        pool.append(arena)
        if zero:
            _zero_arenas[id(arena)] = arena
    return arena, 0


def _own_mapping(size: int, zero: bool, secret: bool) -> Arena:
    rounded = (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    arena = Arena(rounded, rounded, zero, secret, None)
    if zero:
        _zero_arenas[id(arena)] = arena
    return arena


def _free_locked(arena: Arena, offset: int) -> None:
    """Give a wiped slot back (under the lock); unmap an arena nobody uses."""
    free = arena.free
    free.append(offset)
    pool = _pools.get(arena.key)  # type: ignore[arg-type]
    if pool is None:
        pool = _pools[arena.key] = []  # type: ignore[index]
    if len(free) == 1 and arena.fresh >= arena.size:
        pool.append(arena)  # it was exhausted: available again
    if len(free) * arena.slot == arena.fresh:  # every slot it handed out is back
        if len(pool) > 1 and arena in pool:
            pool.remove(arena)
            arena.unmap()
        else:
            free.clear()
            arena.fresh = 0


def _drain() -> None:
    while _pending:
        _free_locked(*_pending.pop())


def _zeros_for(slot: int) -> bytes:
    zeros = _zero_slots.get(slot)
    if zeros is None:
        zeros = _zero_slots.setdefault(slot, bytes(slot))
    return zeros


def _release(arena: Arena, offset: int) -> None:
    """Wipe and free a region's memory (close() and keep_on_fork(); not for finalizers)."""
    if arena.key is None:
        _wipe(arena.root)
        arena.unmap()
        return
    with _rt.lock:
        arena.mem[offset : offset + arena.slot] = arena.zeros
        _free_locked(arena, offset)
        if _pending:
            _drain()


def _release_later(arena: Arena, offset: int) -> None:
    """From a finalizer: wipe now; free now unless this thread holds the lock or a fork is unsettled."""
    if arena.key is None:
        _zero_arenas.pop(id(arena), None)
        try:
            arena.unmap()
        except BufferError:  # a view derived from the root still lives: unmapped at its death
            pass
        return
    arena.mem[offset : offset + arena.slot] = arena.zeros
    lock = _rt.lock
    if _rt.is_owned(lock) or not _rt.published():
        # Mid-update books on this thread, or a lock that detection is about to
        # replace: leave the slot for the next slab operation (list.append is atomic).
        _pending.append((arena, offset))
        return
    with lock:  # held only for a few list operations, never while waiting on this thread
        _free_locked(arena, offset)
        if _pending:
            _drain()


def stats() -> "dict[str, int]":
    """Mappings and bytes held by the slab (for diagnostics and benchmarks)."""
    _rt.settle()
    if _orphans:
        _reap()
    with _rt.lock:
        partly_free = sum(len(pool) for pool in _pools.values())
        zero = list(_zero_arenas.values())
    return {
        "zero_arenas": len(zero),
        "zero_bytes": sum(len(a.mem) for a in zero),
        "partly_free_arenas": partly_free,
    }


# -- new-process steps (run by the runtime, under its lock, GC paused) ---------------------------------


def _wipe_lazily_wiped_memory() -> None:
    if not _rt.kernel_wipes:  # the kernel did it for kernel backends
        for arena in tuple(_zero_arenas.values()):
            _wipe(arena.root)


def _reset_books() -> None:
    # A thread that did not survive a fork from C may have left a pool entry
    # half-updated; every single step leaves the books usable, so dropping
    # exhausted arenas from the pools is all the repair needed.
    for pool in _pools.values():
        pool[:] = [arena for arena in pool if arena.free or arena.fresh < arena.size]
    while _pending:
        _free_locked(*_pending.pop())


_rt.add_step("wipe lazily wiped memory", _wipe_lazily_wiped_memory)
_rt.add_step("reset the slab's books", _reset_books)


# -- exports ----------------------------------------------------------------------------------------------

if sys.version_info >= (3, 12):

    class _Export:
        """Hands its view to exactly one consumer: the memoryview built around it (PEP 688)."""

        __slots__ = ("_view",)

        def __init__(self, view: memoryview) -> None:
            self._view: memoryview | None = view

        def __buffer__(self, flags: int, /) -> memoryview:
            view, self._view = self._view, None
            if view is None:
                raise BufferError("a Region's export is handed out once; use Region.view()")
            return view

    def _export(view: memoryview) -> memoryview:
        return memoryview(_Export(view))

else:

    def _export(view: memoryview) -> memoryview:
        # Before PEP 688 a Python class cannot export a buffer; a cffi buffer holds the
        # export and does not hand out the view it came from.
        try:
            from ._native import ffi
        except ImportError as exc:  # cffi cannot load in a subinterpreter
            raise RuntimeError(f"Region.view() needs cffi on Python < 3.12: {exc}") from exc
        return memoryview(ffi.buffer(ffi.from_buffer("char[]", view, require_writable=True)))


def _exported(view: memoryview) -> memoryview:
    """A new view of ``view`` whose every derivative pins it (see the module docstring)."""
    if _GC_CLEARS_EXPORTED_VIEWS:
        _exported_views[id(view)] = view
    if _orphans or len(_buffer_exports) > 64:
        _reap()
    return _export(view)


def _exported_for_consumer(view: memoryview) -> memoryview:
    """What ``Region.__buffer__`` returns; on 3.12+ the buffer protocol then exports it too."""
    outer = _exported(view)
    if _GC_CLEARS_EXPORTED_VIEWS and sys.version_info >= (3, 12):
        _buffer_exports.append(outer)
    return outer


# -- Region ---------------------------------------------------------------------------------------------


def _index(value: object, what: str) -> int:
    """operator.index() without importing operator, with bytearray's messages; bools are no size or byte."""
    if type(value) is int and (what != "index" or -sys.maxsize - 1 <= value <= sys.maxsize):
        return value
    to_index = getattr(type(value), "__index__", None)
    if to_index is None or (what != "index" and isinstance(value, bool)):
        if what == "index":
            raise TypeError(f"Region indices must be integers or slices, not {type(value).__name__}")
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    result = to_index(value)
    if not isinstance(result, int):
        raise TypeError(f"__index__ returned non-int (type {type(result).__name__})")
    if what == "index" and not -sys.maxsize - 1 <= result <= sys.maxsize:
        raise IndexError("cannot fit 'int' into an index-sized integer")
    return int(result)


def _checked_size(size: object) -> int:
    n = _index(size, "size")
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

    __slots__ = ("__weakref__", "_arena", "_offset", "_size", "_view")

    _view: "memoryview | None"
    _arena: Arena
    _offset: int
    _size: int

    def __init__(self) -> None:
        raise TypeError("use inherit.zero_on_fork(size) to make a Region")

    def _live(self) -> memoryview:
        try:
            view = self._view
        except AttributeError:  # made with Region.__new__, not zero_on_fork()
            raise ValueError("this Region was never opened; use inherit.zero_on_fork()") from None
        if view is None:
            raise ValueError("operation on a closed Region")
        if not _rt.kernel_wipes:
            _rt.settle()  # the library wipes: settle a fork before the bytes are read
        return view

    def __len__(self) -> int:
        self._live()
        return self._size

    if TYPE_CHECKING:

        @overload
        def __getitem__(self, key: "SupportsIndex") -> int: ...
        @overload
        def __getitem__(self, key: slice) -> bytearray: ...

    def __getitem__(self, key: "SupportsIndex | slice") -> "int | bytearray":
        view = self._live()
        if isinstance(key, slice):
            return bytearray(view[key])
        index = _index(key, "index")
        try:
            return view[index]
        except IndexError:
            raise IndexError("Region index out of range") from None

    if TYPE_CHECKING:

        @overload
        def __setitem__(self, key: "SupportsIndex", value: "SupportsIndex") -> None: ...
        @overload
        def __setitem__(self, key: slice, value: "Any") -> None: ...

    def __setitem__(self, key: "SupportsIndex | slice", value: "Any") -> None:
        view = self._live()
        if isinstance(key, slice):
            if isinstance(value, int):
                raise TypeError("can assign only bytes-like objects to a Region slice")
            try:
                source = memoryview(value)
            except TypeError:
                raise TypeError(
                    f"can assign only bytes-like objects to a Region slice, not {type(value).__name__}"
                ) from None
            with source:
                if source.format != "B" or source.ndim != 1:  # 'b', 'c', ctypes '<c', wider items
                    source = source.cast("B")
                wanted = len(range(*key.indices(self._size)))
                if source.nbytes != wanted:
                    raise ValueError(
                        f"a Region has a fixed length: slice needs {wanted} bytes, got {source.nbytes}"
                    )
                view[key] = source
            return
        index = _index(key, "index")  # first, as bytearray does
        byte = _index(value, "a byte")
        if not 0 <= byte <= 255:
            raise ValueError("byte must be in range(0, 256)")
        try:
            view[index] = byte
        except IndexError:
            raise IndexError("Region index out of range") from None

    def __iter__(self) -> "Iterator[int]":
        return iter(self._live().tolist())

    def __bytes__(self) -> bytes:
        return self._live().tobytes()

    def view(self) -> memoryview:
        """A writable memoryview of the region (any Python version).

        The region cannot be closed while this view, or anything derived from
        it, is alive; release it with ``view.release()`` or a ``with`` block.
        """
        return _exported(self._live())

    def __buffer__(self, flags: int, /) -> memoryview:
        return _exported_for_consumer(self._live())

    def wipe(self) -> None:
        """Set every byte to zero (the region stays open)."""
        _wipe(self._live())

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return getattr(self, "_view", None) is None

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
        """True if the pages are locked in RAM (secret regions, best effort, verified on Linux)."""
        self._live()
        return self._arena.mlocked

    @property
    def dumpable(self) -> bool:
        """False if the pages are shown to be excluded from core dumps."""
        self._live()
        return not self._arena.excluded_from_dumps

    def close(self) -> None:
        """Wipe the bytes and free them. Idempotent.

        Raises BufferError while a view of the region is alive.
        """
        try:
            view = self._view
        except AttributeError:  # never opened
            return
        if view is None:
            return
        if not _rt.flag[0]:
            _rt.settle()
        if _buffer_exports or _orphans:
            _reap()  # a view nobody holds any more must not keep the region exported
        arena = self._arena
        lock = _rt.lock
        if arena.key is None or _is_owned(lock):
            self._close_slowly(view, lock)
            return
        with lock:
            if self._view is not view:
                return  # closed by another thread meanwhile
            try:
                view.release()
            except BufferError:
                raise BufferError(
                    "cannot close a Region while memoryviews of it exist; release them first"
                ) from None
            self._view = None
            offset = self._offset
            arena.mem[offset : offset + arena.slot] = arena.zeros
            _free_locked(arena, offset)
            if _pending:
                _drain()
        if _exported_views:
            _exported_views.pop(id(view), None)

    def _close_slowly(self, view: memoryview, lock: "Any") -> None:
        """A large region's own mapping, or a close() re-entered while this thread holds the lock."""
        reentered = _is_owned(lock)
        with lock:
            if self._view is not view:
                return
            try:
                view.release()
            except BufferError:
                raise BufferError(
                    "cannot close a Region while memoryviews of it exist; release them first"
                ) from None
            self._view = None
        _exported_views.pop(id(view), None)
        if reentered and self._arena.key is not None:
            _release_later(self._arena, self._offset)  # books may be mid-update: wipe now, free later
        else:
            _release(self._arena, self._offset)  # a large region's mapping: wipe, unmap

    def __enter__(self) -> "Region":
        self._live()
        return self

    def __exit__(
        self,
        exc_type: "type[BaseException] | None",
        exc: "BaseException | None",
        tb: "TracebackType | None",
    ) -> None:
        self.close()

    def __del__(
        self,
        _wipe: "Any" = _wipe,
        _later: "Any" = _release_later,
        _orphans: "Any" = _orphans,
        _exported_views: "Any" = _exported_views,
    ) -> None:
        # Everything used here is bound at definition: at interpreter shutdown
        # module globals may already be gone.
        try:
            view = self._view
        except AttributeError:  # construction failed before the view was set
            return
        if view is None:
            return
        try:
            _wipe(view)  # now, whatever happens to the slot
            try:
                view.release()
            except BufferError:
                # Exports outlive the region (their owner dropped it): the slot is
                # freed once they are gone (the view stays pinned until then).
                _orphans.append((view, self._arena, self._offset))
                return
            self._view = None
            _exported_views.pop(id(view), None)
            _later(self._arena, self._offset)
        except Exception:  # pragma: no cover - interpreter shutdown: the process's memory goes anyway
            pass

    def __repr__(self) -> str:
        if self.closed:
            return f"<inherit.Region size={self._size} closed>"
        secret = " secret" if self._arena.secret else ""
        return f"<inherit.Region size={self._size} on_fork={self.on_fork!r}{secret}>"

    def __reduce_ex__(self, protocol: "SupportsIndex") -> "NoReturn":
        raise TypeError("a Region cannot be pickled or copied: that would copy its bytes")

    def __copy__(self) -> "NoReturn":
        raise TypeError("a Region cannot be copied: that would copy its bytes")

    def __deepcopy__(self, memo: object) -> "NoReturn":
        raise TypeError("a Region cannot be copied: that would copy its bytes")


_new_region = object.__new__
_is_owned = _rt.is_owned


def zero_on_fork(size: int, *, secret: bool = False) -> Region:
    """Allocate ``size`` zero bytes that read as zeros in every forked child.

    ``secret=True`` also keeps the pages out of core dumps and tries to lock
    them in RAM (see :attr:`Region.dumpable` and :attr:`Region.locked`).
    """
    if type(size) is not int or size <= 0 or size > _MAX_SIZE:
        size = _checked_size(size)
    if secret is not False and secret is not True:
        raise TypeError("secret must be True or False")
    if size <= MAX_SLOT:
        arena, offset = _take_slot(_SLOT_OF[size], True, secret)  # chooses the backend on first use
    else:
        _rt.settle()
        arena, offset = _own_mapping(size, True, secret), 0
    region = _new_region(Region)
    region._arena = arena
    region._offset = offset
    region._size = size
    region._view = arena.root[offset : offset + size]
    return region


def keep_on_fork(region: Region) -> Region:
    """Undo :func:`zero_on_fork`: children inherit a copy of ``region`` again.

    Small regions share pages with others, so their bytes move to memory that
    children inherit; that needs every view of the region released first
    (``BufferError`` otherwise). Returns the region.
    """
    if not isinstance(region, Region):
        raise TypeError(f"keep_on_fork() takes a Region, not {type(region).__name__}")
    region._live()
    arena = region._arena
    if not arena.zero:
        return region
    if arena.key is None:  # a mapping of its own: just re-mark it
        _rt.selection().backend.mark_keep(arena.mem)
        arena.zero = False
        _zero_arenas.pop(id(arena), None)
        return region
    new_arena, new_offset = _take_slot(arena.slot, False, arena.secret)
    with _rt.lock:
        view = region._view
        if view is None or region._arena is not arena:  # closed or moved by another thread meanwhile
            moved = None
        else:
            new_view = new_arena.root[new_offset : new_offset + region._size]
            new_view[:] = view
            try:
                view.release()
            except BufferError:
                new_view.release()
                moved = False
            else:
                old_offset = region._offset
                region._arena, region._offset, region._view = new_arena, new_offset, new_view
                _exported_views.pop(id(view), None)
                moved = True
    if not moved:
        _release(new_arena, new_offset)
        if moved is None:
            raise ValueError("the Region was closed or moved during keep_on_fork()")
        raise BufferError("keep_on_fork() must move a small Region; release its memoryviews first")
    _release(arena, old_offset)
    return region
