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
# One chunk of zeros, made on first use. Bytes, not a memoryview: at interpreter shutdown
# this list can sit in a garbage cycle while a wipe exports it, and CPython before 3.12.7
# crashes when its collector clears an exported memoryview (gh-77894).
_zeros: "list[bytes]" = []
# The advice that gives pages back as zeros (backends.ZEROING_ADVICE), looked up on first use.
_zeroing_advice: "list[int | None]" = []


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


def _wipe(view: memoryview, _zeros: "list[bytes]" = _zeros, _chunk: int = _CHUNK) -> None:
    """Zero ``view`` in bounded chunks: never a copy the size of the region.

    What it uses is bound at definition: finalizers call it at interpreter
    shutdown, when module globals may be gone.
    """
    size = len(view)
    if not _zeros:
        _zeros.append(bytes(_chunk))
    zeros = _zeros[0]
    start = 0
    while start < size:
        end = min(start + _chunk, size)
        view[start:end] = zeros[: end - start]
        start = end


# mmap.find() read past the end of its range before 3.11.5 (gh-105235), which segfaults
# when the next page is unmapped; older versions compare a page at a time instead.
_find_reads_only_inside = sys.version_info >= (3, 11, 5)


def _wipe_mapping(
    arena: "Arena",
    _zeros: "list[bytes]" = _zeros,
    _chunk: int = _CHUNK,
    _zeroing_advice: "list[int | None]" = _zeroing_advice,
    _find_reads_only_inside: bool = _find_reads_only_inside,
) -> None:
    """Zero a whole arena without touching pages nobody wrote (no RSS growth, no copy-on-write).

    The advice is only trusted as far as the bytes show: every chunk is then
    compared with zeros (``mmap.find``: no copy), and any that is not zero is
    written, so a call that answered "success" and did nothing (a seccomp
    filter) still ends in zeros. Reading an untouched page maps the shared
    zero page; it costs no memory.
    """
    mem = arena.mem
    if not _zeroing_advice:
        try:
            from .backends import ZEROING_ADVICE
        except ImportError:  # interpreter shutdown: write the zeros
            ZEROING_ADVICE = None
        _zeroing_advice.append(ZEROING_ADVICE)
    advice = _zeroing_advice[0]
    if advice is not None and not arena.mlocked:
        try:
            mem.madvise(advice)
        except OSError:  # refused (mlocked, confined): the writes below do it
            pass
    if not _zeros:
        _zeros.append(bytes(_chunk))
    zeros = _zeros[0]
    size = len(mem)
    start = 0
    if _find_reads_only_inside:
        while start < size:
            end = min(start + _chunk, size)
            needle = zeros if end - start == _chunk else zeros[: end - start]
            if mem.find(needle, start, end) != start:
                mem[start:end] = needle
            start = end
        return
    page = zeros[:PAGE_SIZE]  # a page at a time: small copies, no read past the mapping
    while start < size:
        end = min(start + PAGE_SIZE, size)
        if mem[start:end] != (page if end - start == PAGE_SIZE else page[: end - start]):
            mem[start:end] = page[: end - start]
        start = end


def _is_released(view: memoryview) -> bool:
    try:
        view.nbytes  # noqa: B018 - raises on a released view
    except ValueError:
        return True
    return False


def _wipe_slot(arena: "Arena", offset: int) -> None:
    """Zero a region's memory through its arena: works after the region's view is released."""
    if arena.key is None:
        _wipe_mapping(arena)
    else:
        arena.mem[offset : offset + arena.slot] = arena.zeros


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
        "restore_zero",
        "root",
        "secret",
        "size",
        "slot",
        "zero",
        "zeros",
    )

    def __init__(
        self, size: int, slot: int, zero: bool, secret: bool, key: "int | None", restore_zero: bool = False
    ) -> None:
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
        self.restore_zero = restore_zero
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
        _restore_arenas.pop(id(self), None)
        self.root.release()
        self.mem.close()


# Arenas with free slots, per slot | zero << 16 | secret << 17; guarded by the process lock.
_pools: "dict[int, list[Arena]]" = {}
# Every zero-on-fork arena, for the getpid backend's wipe in a new process.
_zero_arenas: "dict[int, Arena]" = {}
# Every arena of regions made with on_restore="zero", for the wipe after a restore.
_restore_arenas: "dict[int, Arena]" = {}
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


def _take_slot(slot: int, zero: bool, secret: bool, restore_zero: bool = False) -> "tuple[Arena, int]":
    if not _rt.flag[0]:
        _rt.settle()  # a fork first: the books belong to this process's lock
    if _orphans:
        _reap()
    lock = _rt.lock
    if _is_owned(lock):
        # Re-entered from a finalizer or signal handler while this thread holds the
        # lock: the books may be mid-update, so use a mapping of its own instead.
        return _own_mapping(slot, zero, secret, restore_zero), 0
    key = slot | zero << 16 | secret << 17 | restore_zero << 18
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
    arena = Arena(
        ARENA_SIZE, slot, zero, secret, key, restore_zero
    )  # outside the lock: syscalls, maybe /proc
    _register(arena)  # first: no slot of it is handed out before the wipes know it
    with lock:
        arena.fresh = slot
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = []
        pool.append(arena)
    return arena, 0


def _own_mapping(size: int, zero: bool, secret: bool, restore_zero: bool = False) -> Arena:
    if not _zeros:  # now, not at the wipe: a finalizer under an address-space limit allocates nothing
        _zeros.append(bytes(_CHUNK))
    rounded = (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    arena = Arena(rounded, rounded, zero, secret, None, restore_zero)
    _register(arena)
    return arena


def _register(arena: Arena) -> None:
    if arena.zero:
        _zero_arenas[id(arena)] = arena
    if arena.restore_zero:
        _restore_arenas[id(arena)] = arena


def _free_locked(arena: Arena, offset: int) -> None:
    """Give a wiped slot back (under the lock); unmap an arena nobody uses.

    An interrupt between any two steps leaves the books usable: at worst an
    arena with free slots is missing from its pool until its next free.
    """
    free = arena.free
    free.append(offset)
    pool = _pools.get(arena.key)  # type: ignore[arg-type]
    if pool is None:
        pool = _pools[arena.key] = []  # type: ignore[index]
    if len(free) * arena.slot == arena.fresh:  # every slot it handed out is back
        if arena in pool:
            if len(pool) > 1:
                pool.remove(arena)
                arena.unmap()
                return
        elif pool:
            arena.unmap()
            return
        free.clear()
        arena.fresh = 0
    if arena not in pool:
        pool.append(arena)  # it was exhausted: available again


def _free_once(arena: Arena, offset: int) -> None:
    """``_free_locked`` for a slot that may have been given back already (an interrupted or repeated free)."""
    if not arena.slot_free(offset):
        _free_locked(arena, offset)


def _drain() -> None:
    while _pending:
        _free_once(*_pending.pop())


def _give_back(arena: Arena, offset: int, reentered: bool) -> None:
    """Free a wiped region's memory: its own mapping, a slot now, or a slot later (``reentered``)."""
    if arena.key is None:
        arena.unmap()
    elif reentered:  # this thread's books may be mid-update: the next slab operation frees it
        _pending.append((arena, offset))
    else:
        _free_locked(arena, offset)
        if _pending:
            _drain()


def _zeros_for(slot: int) -> bytes:
    zeros = _zero_slots.get(slot)
    if zeros is None:
        zeros = _zero_slots.setdefault(slot, bytes(slot))
    return zeros


def _give_back_once(arena: Arena, offset: int, reentered: bool) -> None:
    """``_give_back`` for memory that an interrupted call may have given back already."""
    if arena.key is None:
        arena.unmap()
    elif reentered:
        if (arena, offset) not in _pending:
            _pending.append((arena, offset))
    else:
        with _rt.lock:
            _free_once(arena, offset)
            if _pending:
                _drain()


def _retire(arena: Arena, offset: int, reentered: bool) -> None:
    """Wipe and free memory no region refers to (a slot taken for a move that did not happen)."""
    if arena.key is None or reentered:  # no lock is released in between: repeating is safe
        try:
            _wipe_slot(arena, offset)
            _give_back_once(arena, offset, reentered)
        except BaseException:  # interrupted: once more, so nothing is left half done
            _wipe_slot(arena, offset)
            _give_back_once(arena, offset, reentered)
            raise
        return
    # Both attempts under one hold of the lock: once the slot is back and the lock is
    # released, another thread or a signal handler may be handed it, and a repeated
    # wipe or free would hit that new owner's region.
    with _rt.lock:
        try:
            _wipe_slot(arena, offset)
            _free_once(arena, offset)
        except BaseException:
            _wipe_slot(arena, offset)
            _free_once(arena, offset)
            raise
        if _pending:
            _drain()


def _release_later(arena: Arena, offset: int, wiped: bool = False) -> None:
    """From a finalizer: wipe now; free now unless this thread holds the lock or a fork is unsettled."""
    if not wiped:  # a dead region's orphaned exports may have written since its death
        _wipe_slot(arena, offset)
    if arena.key is None:
        _zero_arenas.pop(id(arena), None)
        try:
            arena.unmap()
        except BufferError:  # a view derived from the root still lives: unmapped at its death
            pass
        return
    lock = _rt.lock
    if _rt.is_owned(lock) or not _rt.published():
        # Mid-update books on this thread, or a lock that detection is about to
        # replace: leave the slot for the next slab operation (list.append is atomic).
        _pending.append((arena, offset))
        return
    with lock:  # held only for a few list operations, never while waiting on this thread
        _free_once(arena, offset)
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
    if _rt.forked and not _rt.kernel_wipes:  # the kernel did it for kernel backends
        for arena in tuple(_zero_arenas.values()):
            _wipe_mapping(arena)


def _wipe_on_restore() -> None:
    if _rt.restored:  # a clone of a snapshot: no kernel wipes anything
        for arena in tuple(_restore_arenas.values()):
            _wipe_mapping(arena)


def _reset_books() -> None:
    # A thread that did not survive a fork from C may have left a pool entry
    # half-updated; every single step leaves the books usable, so dropping
    # exhausted arenas from the pools is all the repair needed.
    for pool in _pools.values():
        pool[:] = [arena for arena in pool if arena.free or arena.fresh < arena.size]
    while _pending:
        _free_once(*_pending.pop())


_rt.add_step("wipe lazily wiped memory", _wipe_lazily_wiped_memory)
_rt.add_step("wipe memory marked zero on restore", _wipe_on_restore)
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
    """What ``Region.__buffer__`` and ``Region.view()`` return.

    Before 3.12.7 the returned view is kept reachable while anything else
    holds it: a consumer may export it and drop both in a garbage cycle.
    """
    outer = _exported(view)
    if _GC_CLEARS_EXPORTED_VIEWS:
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
        if _rt.settle_on_read:
            _rt.settle()  # the library wipes (a fork, a restore): settle before the bytes are read
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
        return _exported_for_consumer(self._live())

    def __buffer__(self, flags: int, /) -> memoryview:
        if type(flags) is not int:
            flags = _index(flags, "flags")
        return _exported_for_consumer(self._live())

    def wipe(self) -> None:
        """Set every byte to zero (the region stays open)."""
        view = self._live()
        if self._arena.key is None:
            _wipe_mapping(self._arena)  # its own mapping: untouched pages stay untouched
        else:
            _wipe(view)

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
    def on_restore(self) -> str:
        """``"zero"`` or ``"keep"``: what a clone restored from a VM snapshot reads once it detects it."""
        self._live()
        return "zero" if self._arena.restore_zero else "keep"

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
        lock = _rt.lock
        if _is_owned(lock):
            # Re-entered from a finalizer or signal handler inside a slab operation
            # of this thread: the books may be mid-update, so the slot is freed later.
            self._close_locked(True)
        elif self._arena.key is None:
            self._close_locked(False)  # a mapping of its own: no books to guard
        else:
            # _close_locked(False) inlined (the common case, on the allocation benchmark's path).
            with lock:
                view = self._view
                if view is None:
                    return
                arena = self._arena
                offset = self._offset
                claimed = False
                try:
                    view.release()
                    arena.mem[offset : offset + arena.slot] = arena.zeros  # wiped before the claim
                    current = self._view
                    self._view = None  # the claim: no call or jump since the read
                    claimed = current is view
                    if not claimed:
                        self._view = current  # closed or moved meanwhile: not this call's to free
                        return
                    _free_locked(arena, offset)
                    if _pending:
                        _drain()
                except BaseException as exc:
                    self._close_interrupted(exc, view, arena, offset, claimed)
                    raise
            if _exported_views:
                _exported_views.pop(id(view), None)

    def _close_interrupted(
        self, exc: BaseException, view: memoryview, arena: Arena, offset: int, claimed: bool
    ) -> None:
        """close()'s inlined path was interrupted (or refused): finish what it started, under the lock."""
        if claimed:
            _free_once(arena, offset)
        elif not _is_released(view):  # release() refused: views of the region are alive
            if isinstance(exc, BufferError):
                raise BufferError(
                    "cannot close a Region while memoryviews of it exist; release them first"
                ) from None
        elif self._view is view:  # interrupted once the view was gone: finish, so the bytes are wiped
            self._finish_close(view, arena, offset, False)

    def _close_locked(self, reentered: bool) -> None:
        """close() with the books guarded. Each step can be interrupted and repeated.

        A signal handler (or finalizer) may run after any call in here and
        close or move this region itself; the view is re-read after every call,
        and only the call that finds it unchanged commits. CPython runs such
        code only at calls and jumps, so the commit (a read and a store with
        neither between them) is never split.
        """
        view = self._view
        if view is None:
            return
        arena = self._arena
        offset = self._offset
        try:
            view.release()
            self._finish_close(view, arena, offset, reentered)
        except BaseException as exc:
            if not _is_released(view):  # release() refused: views of the region are alive
                if isinstance(exc, BufferError):
                    raise BufferError(
                        "cannot close a Region while memoryviews of it exist; release them first"
                    ) from None
                raise
            if self._view is view:  # interrupted once the view was gone: finish, so the bytes are wiped
                self._finish_close(view, arena, offset, reentered)
            raise

    def _finish_close(self, view: memoryview, arena: Arena, offset: int, reentered: bool) -> None:
        _wipe_slot(arena, offset)  # before the claim: an interrupted close() is finished by its caller
        current = self._view
        self._view = None  # the claim: no call or jump since the read above
        if current is view:  # the common case falls through: 3.10 runs handlers at a taken jump
            try:
                _give_back(arena, offset, reentered)
            except BaseException:  # interrupted: finish the free, once
                _give_back_once(arena, offset, reentered)
                raise
            finally:
                if _exported_views:
                    _exported_views.pop(id(view), None)
        else:
            self._view = current  # closed or moved meanwhile: not this call's to free

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
        _wipe_slot: "Any" = _wipe_slot,
        _later: "Any" = _release_later,
        _orphans: "Any" = _orphans,
        _exported_views: "Any" = _exported_views,
        _finalizing: "Any" = sys.is_finalizing,
    ) -> None:
        # Everything used here is bound at definition: at interpreter shutdown
        # module globals may already be gone.
        try:
            view = self._view
        except AttributeError:  # construction failed before the view was set
            return
        if view is None or _finalizing():
            # At shutdown the process's memory goes with it; a wipe then would run the
            # collector over half-torn-down modules, which CPython 3.11.2 crashes on.
            return
        arena, offset = self._arena, self._offset
        try:
            # Through the arena, not the view: an interrupted close() may have released it.
            _wipe_slot(arena, offset)
            try:
                view.release()
            except BufferError:
                # Exports outlive the region (their owner dropped it): the slot is
                # freed once they are gone (the view stays pinned until then).
                _orphans.append((view, arena, offset))
                return
            self._view = None
            _exported_views.pop(id(view), None)
            _later(arena, offset, True)
        except Exception:  # pragma: no cover - interpreter shutdown: the process's memory goes anyway
            pass
        except BaseException:  # a signal handler's exception: wipe again, then let it be reported
            if self._view is not None:  # still ours: once it is None the slot may have a new owner
                _wipe_slot(arena, offset)
            raise

    def __repr__(self) -> str:
        if not hasattr(self, "_size"):
            return "<inherit.Region never opened>"
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


def zero_on_fork(size: int, *, secret: bool = False, on_restore: str = "keep") -> Region:
    """Allocate ``size`` zero bytes that read as zeros in every forked child.

    ``secret=True`` also keeps the pages out of core dumps and tries to lock
    them in RAM (see :attr:`Region.dumpable` and :attr:`Region.locked`).
    ``on_restore="zero"`` also wipes them when a restore from a VM snapshot is
    detected (see docs/snapshots.md); the default keeps them.
    """
    if type(size) is not int or size <= 0 or size > _MAX_SIZE:
        size = _checked_size(size)
    if secret is not False and secret is not True:
        raise TypeError("secret must be True or False")
    if on_restore == "keep":
        restore_zero = False
    elif on_restore == "zero":
        restore_zero = True
    elif isinstance(on_restore, str):
        raise ValueError(f"on_restore must be 'keep' or 'zero', not {on_restore!r}")
    else:
        raise TypeError(f"on_restore must be 'keep' or 'zero', not {type(on_restore).__name__}")
    if size <= MAX_SLOT:
        arena, offset = _take_slot(
            _SLOT_OF[size], True, secret, restore_zero
        )  # chooses the backend on first use
    else:
        _rt.settle()
        arena, offset = _own_mapping(size, True, secret, restore_zero), 0
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
    (``BufferError`` otherwise). Returns the region. An interrupt (a signal
    handler's exception) leaves the region usable and no copy of its bytes behind.
    """
    if not isinstance(region, Region):
        raise TypeError(f"keep_on_fork() takes a Region, not {type(region).__name__}")
    region._live()
    arena = region._arena
    if not arena.zero:
        return region
    if arena.key is None:  # a mapping of its own: re-mark it in place
        _keep_own_mapping(arena)
        return region
    lock = _rt.lock
    reentered = _is_owned(lock)  # inside a slab operation of this thread (a signal handler)
    new_arena, new_offset = _take_slot(arena.slot, False, arena.secret, arena.restore_zero)
    try:
        with lock:
            _move(region, arena, new_arena, new_offset, reentered)
    except BaseException as exc:
        if region._arena is not new_arena:  # not moved: the new slot goes back
            _retire(new_arena, new_offset, reentered)
        if isinstance(exc, ValueError) and region._view is not None and not region._arena.zero:
            return region  # a signal handler moved it meanwhile: what was asked is done
        raise
    return region


def _keep_own_mapping(arena: Arena) -> None:
    backend = _rt.selection().backend
    try:
        backend.mark_keep(arena.mem)
    except OSError:
        raise
    except BaseException:  # an interrupt: advise again, so on_fork tells the truth
        backend.mark_keep(arena.mem)
        arena.zero = False
        _zero_arenas.pop(id(arena), None)
        raise
    arena.zero = False
    _zero_arenas.pop(id(arena), None)


def _move(region: Region, arena: Arena, new_arena: Arena, new_offset: int, reentered: bool) -> None:
    """keep_on_fork() for a slot, under the lock: copy, release the old view, commit, wipe the old slot."""
    view = region._view
    if view is None or region._arena is not arena:
        raise ValueError("the Region was closed or moved during keep_on_fork()")
    old_offset = region._offset
    new_view = new_arena.root[new_offset : new_offset + region._size]
    new_view[:] = view
    try:
        view.release()
        _commit_move(region, view, arena, old_offset, new_arena, new_offset, new_view, reentered)
    except BaseException as exc:
        if not _is_released(view):  # release() refused: views of the region are alive
            new_view.release()
            if isinstance(exc, BufferError):
                raise BufferError(
                    "keep_on_fork() must move a small Region; release its memoryviews first"
                ) from None
            raise
        if region._view is view:  # interrupted once the old view was gone: finish the move
            _commit_move(region, view, arena, old_offset, new_arena, new_offset, new_view, reentered)
        raise


def _commit_move(
    region: Region,
    view: memoryview,
    arena: Arena,
    old_offset: int,
    new_arena: Arena,
    new_offset: int,
    new_view: memoryview,
    reentered: bool,
) -> None:
    current = region._view
    region._view = None  # the claim: no call or jump since the read above
    if current is view:  # falls through: 3.10 runs handlers at a taken jump
        region._arena = new_arena
        region._offset = new_offset
        region._view = new_view  # the commit: plain stores, never split
    else:  # closed by a signal handler meanwhile
        region._view = current
        new_view.release()
        raise ValueError("the Region was closed or moved during keep_on_fork()")
    try:
        _wipe_slot(arena, old_offset)
        _give_back(arena, old_offset, reentered)
    except BaseException:  # interrupted: the old slot is wiped and freed all the same
        _wipe_slot(arena, old_offset)
        _give_back_once(arena, old_offset, reentered)
        raise
    finally:
        if _exported_views:
            _exported_views.pop(id(view), None)
