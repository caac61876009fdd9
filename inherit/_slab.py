"""Slab allocator: small regions share wipe-on-fork pages.

One page per 32-byte key would cost 128x the memory and a VMA each. Small
sizes are rounded up to a power-of-two slot in 64 KiB arenas; larger ones get
a mapping of their own. Arenas are never shared between zero-on-fork and
keep-on-fork memory, nor between secret and ordinary memory, since the
kernel marks whole pages.
"""

from __future__ import annotations

import os
from _thread import allocate_lock

from . import _detect, _select
from .backends import page_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _thread import LockType

MIN_SLOT = 16
MAX_SLOT = 2048
ARENA_SIZE = max(64 * 1024, page_size())


class Arena:
    __slots__ = ("capacity", "free", "locked", "mem", "nodump", "pool", "root", "secret", "slot", "zero")

    def __init__(self, size: int, slot: int, pool: Pool | None, zero: bool, secret: bool) -> None:
        selection = _select.current()
        backend = selection.backend
        try:
            mem = backend.allocate(size)
        except OSError as exc:
            raise MemoryError(f"cannot map {size} bytes: {exc}") from exc
        try:
            if zero:
                backend.mark_zero(mem)
        except OSError as exc:
            mem.close()
            raise OSError(
                exc.errno, f"cannot mark new memory zero-on-fork ({backend.name}): {exc.strerror}"
            ) from exc
        except BaseException:
            mem.close()
            raise
        self.mem = mem
        self.root = memoryview(mem)
        self.slot = slot
        self.capacity = size // slot
        # Pop from the end: hand out low offsets first.
        self.free = list(range((self.capacity - 1) * slot, -1, -slot))
        self.pool = pool
        self.zero = zero
        self.secret = secret
        self.locked = False
        self.nodump = False
        if secret:
            from . import _secret

            self.nodump = _secret.exclude_from_core_dumps(mem)
            self.locked = _secret.lock_in_memory(mem)
        if zero:
            _zero_arenas.add(self)

    def unmap(self) -> None:
        _zero_arenas.discard(self)
        self.root.release()
        self.mem.close()


class Pool:
    __slots__ = ("available", "secret", "slot", "zero", "zeros")

    def __init__(self, slot: int, zero: bool, secret: bool) -> None:
        self.slot = slot
        self.zero = zero
        self.secret = secret
        self.available: list[Arena] = []
        self.zeros = bytes(slot)


_lock = allocate_lock()
_generation = _detect.generation
_pools: dict[int, Pool] = {}  # keyed by slot | zero << 16 | secret << 17
_zero_arenas: set[Arena] = set()
_ZERO_CHUNK = bytes(ARENA_SIZE)


def _slot_table() -> list[int]:
    """size -> slot for every small size (allocation is on the hot path)."""
    table = [0] + [MIN_SLOT] * MIN_SLOT
    slot = MIN_SLOT
    while slot < MAX_SLOT:
        table += [slot * 2] * slot
        slot *= 2
    return table


_SLOT_OF = _slot_table()


def slot_size(size: int) -> int:
    """The slot a small region of ``size`` bytes occupies (0 if it is large)."""
    return _SLOT_OF[size] if size <= MAX_SLOT else 0


def allocate(size: int, zero: bool, secret: bool) -> tuple[Arena, int]:
    """A slot (or, above MAX_SLOT, a mapping of its own) for ``size`` bytes."""
    if size > MAX_SLOT:
        page = page_size()
        rounded = (size + page - 1) // page * page
        return Arena(rounded, rounded, None, zero, secret), 0
    _generation()  # a fork is settled (and the lock replaced) before the lock is taken
    with _lock:
        if _pending:
            _drain()
        return allocate_locked(_SLOT_OF[size], zero, secret)


def allocate_locked(slot: int, zero: bool, secret: bool) -> tuple[Arena, int]:
    key = slot | zero << 16 | secret << 17
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = Pool(slot, zero, secret)
    available = pool.available
    while available and not available[-1].free:
        available.pop()  # left half-updated by a thread that did not survive a fork from C
    if available:
        arena = available[-1]
    else:
        arena = Arena(ARENA_SIZE, slot, pool, zero, secret)
        available.append(arena)
    free = arena.free
    offset = free.pop()
    if not free:
        available.pop()
    return arena, offset


_pending: list[tuple[Arena, int]] = []


def release_later(arena: Arena, offset: int) -> None:
    """Release from a finalizer: now if the lock is free, else at the next slab call."""
    settled = _detect._flag[0] or (_detect.is_lazy() and os.getpid() == _detect._pid)
    if not settled:
        # A new process whose fork is not detected yet: never touch the books
        # under a lock that detection is about to replace.
        _pending.append((arena, offset))
        return
    lock = _lock
    if lock.acquire(blocking=False):
        try:
            release_locked(arena, offset)
            _drain()
        finally:
            lock.release()
    else:
        _pending.append((arena, offset))  # list.append is atomic


def _drain() -> None:
    while _pending:
        release_locked(*_pending.pop())


def lock() -> LockType:
    """The slab lock of this process (a forked child gets a fresh one)."""
    _generation()
    return _lock


def release(arena: Arena, offset: int) -> None:
    with lock():
        release_locked(arena, offset)
        if _pending:
            _drain()


def release_locked(arena: Arena, offset: int) -> None:
    """Wipe a slot and give it back; unmap arenas nobody uses."""
    pool = arena.pool
    if pool is None:
        wipe(arena)
        arena.unmap()
        return
    arena.mem[offset : offset + arena.slot] = pool.zeros
    free = arena.free
    free.append(offset)
    if len(free) == 1:
        pool.available.append(arena)
    elif len(free) == arena.capacity and len(pool.available) > 1:
        pool.available.remove(arena)
        arena.unmap()


def wipe(arena: Arena) -> None:
    mem = arena.mem
    size = len(mem)
    for start in range(0, size, ARENA_SIZE):
        end = min(start + ARENA_SIZE, size)
        mem[start:end] = _ZERO_CHUNK[: end - start]


def wipe_zero_arenas() -> None:
    """For lazy backends: what the kernel would have done at fork."""
    for arena in list(_zero_arenas):
        wipe(arena)


def stats() -> dict[str, int]:
    """Mappings and bytes held by the slab (for diagnostics and benchmarks)."""
    with lock():
        arenas = [a for pool in _pools.values() for a in pool.available]
    return {
        "zero_arenas": len(_zero_arenas),
        "zero_bytes": sum(len(a.mem) for a in _zero_arenas),
        "partly_free_arenas": len(arenas),
    }


def _on_new_process() -> None:
    global _lock
    # Every slab entry point runs generation() first, so this happens before
    # anyone in this process takes the lock: one held by a thread that did not
    # survive a fork made from C is simply left behind.
    _lock = allocate_lock()
    if _detect.is_lazy():
        wipe_zero_arenas()


_detect.on_new_process.append(_on_new_process)


_held_for_fork: list[LockType] = []


def _before_fork() -> None:
    # This process's lock, never one left behind by a fork from C. Only once a
    # backend is installed: a fork hook must never select one (that may fork).
    held = lock() if _detect._installed else _lock
    held.acquire()
    _held_for_fork.append(held)


def _after_fork_in_parent() -> None:
    _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    global _lock
    _held_for_fork.clear()
    _lock = allocate_lock()


if hasattr(os, "register_at_fork"):
    # Never inherit the lock held by a thread that does not exist in the child.
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
