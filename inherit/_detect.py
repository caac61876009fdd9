"""Fork detection: ``generation()``.

With a kernel backend a flag byte lives in a page the kernel wipes in every
child, so the fast path is one memory read with no syscall and no allocation.
With the getpid backend the flag stays zero and every call compares PIDs.
"""

from __future__ import annotations

import os

from ._plock import ProcessLock

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
