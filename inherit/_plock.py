"""A lock that a forked child never finds held by a thread it does not have.

``os.register_at_fork`` covers ``os.fork()`` only; a fork made from C copies a
lock in whatever state another thread left it. So the lock remembers the
process it belongs to and its holder (pid, tid): a caller in another process,
or one that finds the holder gone, moves everyone on to one successor lock,
agreed through an atomic ``dict.setdefault``. Used on slow paths only (each
acquire asks for the PID).
"""

from __future__ import annotations

import os
from _thread import allocate_lock, get_native_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _thread import LockType

_successors: dict[object, tuple[LockType, int]] = {}


class ProcessLock:
    __slots__ = ("_holder", "_state")

    def __init__(self) -> None:
        self._state: tuple[LockType, int] = (allocate_lock(), os.getpid())
        self._holder: tuple[int, int] | None = None

    def held_here(self) -> bool:
        """True if this very thread holds it (re-entry would deadlock)."""
        holder = self._holder
        return holder is not None and holder == (os.getpid(), get_native_id())

    def acquire(self) -> None:
        while True:
            state = self._state
            lock, owner_pid = state
            pid = os.getpid()
            if owner_pid != pid:
                self._move_on(state, ("fork", state, pid), pid)
                continue
            if lock.acquire(timeout=0.02):
                if self._state is state:
                    self._holder = (pid, get_native_id())
                    return
                lock.release()  # moved on while we waited: take the successor
                continue
            holder = self._holder
            if holder is not None and not _alive(holder):
                self._move_on(state, ("dead", state), pid)

    def release(self) -> None:
        self._holder = None
        self._state[0].release()

    def reset(self) -> None:
        """A fresh lock (from an at-fork child hook, where nothing else runs)."""
        self._state = (allocate_lock(), os.getpid())
        self._holder = None

    def _move_on(self, state: tuple[LockType, int], key: object, pid: int) -> None:
        successor = _successors.setdefault(key, (allocate_lock(), pid))
        if self._state is state:
            self._state = successor

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(holder: tuple[int, int]) -> bool:
    pid, tid = holder
    if pid != os.getpid():
        return False
    if os.path.isdir("/proc/self/task"):
        return os.path.exists(f"/proc/self/task/{tid}")
    return True  # no way to tell: keep waiting
