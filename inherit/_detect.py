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
    from collections.abc import Callable

    from .backends import Backend

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
_lock = allocate_lock()
# (pid, tid) of the thread holding _lock: a lock inherited through a fork made
# from C may be held by a thread that does not exist here, and must be replaced.
_holder: tuple[int, int] | None = None
_replacements: dict[object, object] = {}  # held-by-the-dead lock -> its successor
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
    if not _installed:
        from . import _select

        _select.current()
    if _kernel:
        _acquire()
        try:
            if not _flag[0]:
                _new_process()
                _flag[0] = 1  # last: other threads wait on the lock until now
            gen = _generation
        finally:
            _release()
    else:
        pid = os.getpid()
        if pid == _pid:
            return _generation
        _acquire()
        try:
            if _pid != pid:
                _new_process()
                _pid = pid  # last, as above
            gen = _generation
        finally:
            _release()
    _run(after_new_process)
    return gen


def _acquire() -> None:
    """Take the detection lock, replacing one held by a thread of another process."""
    global _lock, _holder
    while True:
        lock = _lock
        if lock.acquire(timeout=0.02):
            if lock is _lock:
                _holder = (os.getpid(), get_native_id())
                return
            lock.release()  # replaced while we waited: take the successor
            continue
        holder = _holder
        if holder is not None and not _alive(holder):
            # setdefault is atomic: every thread that gets here agrees on one successor.
            successor = _replacements.setdefault(lock, allocate_lock())
            if _lock is lock:
                _lock = successor  # type: ignore[assignment]


def _release() -> None:
    global _holder
    _holder = None
    _lock.release()


def _alive(holder: tuple[int, int]) -> bool:
    pid, tid = holder
    if pid != os.getpid():
        return False
    if os.path.isdir("/proc/self/task"):
        return os.path.exists(f"/proc/self/task/{tid}")
    return True  # no way to tell: keep waiting


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
    _acquire()


def _after_fork_in_parent() -> None:
    _release()


def _after_fork_in_child() -> None:
    global _lock, _pid, _holder
    _lock = allocate_lock()
    _holder = None
    if _installed and not _kernel:
        _pid = -1  # this is a fork even if the PID is the parent's (PID namespaces)
        _refresh()  # eager: wipe before the child's code runs


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
