"""Fork detection: ``generation()``.

With a kernel backend a flag byte lives in a page the kernel wipes in every
child, so the fast path is one memory read with no syscall and no allocation.
With the getpid backend the flag stays zero and every call compares PIDs.
"""

from __future__ import annotations

import os
from _thread import allocate_lock, get_native_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _thread import LockType
    from collections.abc import Callable

    from .backends import Backend

_successors: dict[object, tuple[LockType, int]] = {}


class ProcessLock:
    """A lock that a forked child never finds held by a thread it does not have.

    ``os.register_at_fork`` covers ``os.fork()`` only; a fork made from C copies
    a lock in whatever state another thread left it. So this lock remembers the
    process it belongs to and its holder (pid, tid): a caller in another
    process, or one that finds the holder gone, moves everyone on to one
    successor lock, agreed through an atomic ``dict.setdefault``. For slow
    paths only (each acquire asks for the PID).
    """

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


# Zero means "look closer". Until a backend is installed it is a private
# zero byte, so the first call takes the slow path and selects a backend.
_flag: bytearray | memoryview = bytearray(1)
_generation = 0
# The getpid backend's PID of record. Stays -1 with a kernel backend, so a
# child that shares its parent's PID (PID namespaces) can never match it.
_pid = -1
_getpid = os.getpid
_kernel = False
_installed = False
_lock = ProcessLock()
_flag_page: object = None

# Run (under the lock) when a new process is detected, before anyone sees
# the new generation. Used to wipe memory when the kernel does not.
on_new_process: list[Callable[[], None]] = []
# Run after the lock is released (may run arbitrary finalizers).
after_new_process: list[Callable[[], None]] = []
# Told the flag buffer once a backend is installed (modules that inline the fast path).
on_install: list[Callable[[bytearray | memoryview], None]] = []


def generation() -> int:
    """A number that differs in every forked child and is stable otherwise.

    Whatever made the child (``os.fork``, multiprocessing, ``fork()`` from C,
    raw ``fork``/``clone`` syscalls), its value differs from the parent's at
    the fork and from its own children's. Values are only comparable within
    one process.
    """
    if _flag[0]:
        return _generation
    if _getpid() == _pid:
        return _generation
    return _refresh()


def _refresh() -> int:
    global _generation, _pid
    if _lock.held_here():
        # Re-entered from a finalizer while this thread detects the fork: the
        # new generation is already counted.
        return _generation
    if not _installed:
        from . import _select

        _select.current()
    if _kernel:
        _lock.acquire()
        try:
            if not _flag[0]:
                _new_process()
                _flag[0] = 1  # last: other threads wait on the lock until now
            gen = _generation
        finally:
            _lock.release()
    else:
        pid = os.getpid()
        if pid == _pid:
            return _generation
        _lock.acquire()
        try:
            if _pid != pid:
                _new_process()
                _pid = pid  # last, as above
            gen = _generation
        finally:
            _lock.release()
    _run(after_new_process)
    return gen


def _new_process() -> None:
    global _generation
    # The first value is random: a parent that never asked before forking must
    # not later get the same first value as its child did.
    _generation = _generation + 1 if _generation else int.from_bytes(os.urandom(7), "big") | 1
    _run(on_new_process)


def _run(callbacks: list[Callable[[], None]]) -> None:
    """Run every callback; one that fails is reported, never left to undo detection."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            import sys
            import traceback

            print(f"Exception ignored in inherit's fork handler {callback!r}:", file=sys.stderr)
            traceback.print_exc()


def prepare(backend: Backend) -> object:
    """The flag page for ``backend`` (None if it needs none); raises OSError."""
    if not backend.kernel_wipes:
        return None
    page = backend.allocate(_page_size())
    try:
        backend.mark_zero(page)
    except BaseException:
        page.close()
        raise
    return page


def install(backend: Backend, page: object) -> None:
    """Wire detection to the chosen backend (called once, by _select)."""
    global _flag, _kernel, _installed, _flag_page
    if page is not None:
        _flag_page = page
        _flag = memoryview(page)  # type: ignore[arg-type]
        _kernel = True
        for callback in on_install:
            callback(_flag)
    _installed = True


def _page_size() -> int:
    from .backends import page_size

    return page_size()


def is_lazy() -> bool:
    """True when the library, not the kernel, must wipe memory in children."""
    return _installed and not _kernel


def _before_fork() -> None:
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    global _pid
    _lock.reset()
    if _installed and not _kernel:
        _pid = -1  # this is a fork even if the PID is the parent's (PID namespaces)
        _refresh()  # eager: wipe before the child's code runs


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
