"""Run a callable in a forked child made by a chosen route; get its result back.

For testing fork safety: the child's return value (or exception) comes back
over a pipe, pickled. Routes differ in which hooks run in the child:

==================  ==========================  ==================
route               made by                     Python at-fork hooks
==================  ==========================  ==================
``os.fork``         :func:`os.fork`             run
``multiprocessing`` the ``fork`` start method   run
``libc.fork``       ``fork()`` from C (ctypes)  skipped
``syscall.fork``    raw ``fork`` syscall        skipped (pthread_atfork too)
``syscall.clone``   raw ``clone(SIGCHLD)``      skipped (pthread_atfork too)
==================  ==========================  ==================
"""

from __future__ import annotations

import os
import pickle
import platform
import select
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

ROUTES = ("os.fork", "multiprocessing", "libc.fork", "syscall.fork", "syscall.clone")

# Linux syscall numbers for fork and clone (None: no such syscall on that arch).
_SYSCALLS: dict[str, tuple[int | None, int]] = {
    "x86_64": (57, 56),
    "amd64": (57, 56),
    "i386": (2, 120),
    "i686": (2, 120),
    "aarch64": (None, 220),
    "arm64": (None, 220),
    "riscv64": (None, 220),
    "armv7l": (2, 120),
    "ppc64le": (2, 120),
    "ppc64": (2, 120),
}
_HEADER = struct.Struct("!Q")


class ChildFailed(RuntimeError):
    """The child crashed, was killed, or raised something that cannot be sent back."""


class RemoteTraceback(Exception):
    """Carries the child's formatted traceback as the ``__cause__`` of a re-raised error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\n--- traceback in the child ---\n{self.text}"


def available_routes() -> list[str]:
    """The routes this platform supports."""
    if not hasattr(os, "fork"):
        return []
    routes = ["os.fork", "multiprocessing", "libc.fork"]
    if sys.platform.startswith("linux"):
        fork_nr, _ = _SYSCALLS.get(platform.machine(), (None, None))  # type: ignore[arg-type]
        if platform.machine() in _SYSCALLS:
            if fork_nr is not None:
                routes.append("syscall.fork")
            routes.append("syscall.clone")
    return routes


def _libc() -> Any:
    import ctypes

    # PyDLL keeps the GIL across the call, so the child starts with it held.
    lib = ctypes.PyDLL(None)
    lib.syscall.restype = ctypes.c_long
    return lib


def _raw_fork(route: str) -> int:
    """Fork by ``route`` (not multiprocessing); return the pid like fork() does."""
    if route == "os.fork":
        return os.fork()
    import ctypes

    lib = _libc()
    if route == "libc.fork":
        pid = int(lib.fork())
    elif route in ("syscall.fork", "syscall.clone"):
        if route not in available_routes():
            raise ValueError(f"route {route!r} is not available on {sys.platform}/{platform.machine()}")
        fork_nr, clone_nr = _SYSCALLS[platform.machine()]
        if route == "syscall.fork":
            pid = int(lib.syscall(ctypes.c_long(fork_nr)))
        else:
            zero = ctypes.c_long(0)
            pid = int(lib.syscall(ctypes.c_long(clone_nr), ctypes.c_long(signal.SIGCHLD), zero, zero, zero, zero))
    else:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{route} failed")
    return pid


def _child_main(write_fd: int, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        try:
            payload = pickle.dumps(("ok", func(*args, **kwargs)))
        except BaseException as exc:
            text = traceback.format_exc()
            try:
                payload = pickle.dumps(("error", exc, text))
            except Exception:
                payload = pickle.dumps(("error", None, text))
        os.write(write_fd, _HEADER.pack(len(payload)))
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os._exit(0)


def _read_result(read_fd: int, pid: int, deadline: float, route: str) -> tuple[Any, ...]:
    chunks = bytearray()
    need: int | None = None
    while need is None or len(chunks) < need + _HEADER.size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the child ({route}) did not answer in time")
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if not ready:
            continue
        data = os.read(read_fd, 65536)
        if not data:
            break
        chunks += data
        if need is None and len(chunks) >= _HEADER.size:
            (need,) = _HEADER.unpack_from(chunks)
    if need is None or len(chunks) < need + _HEADER.size:
        return ("died",)
    result: tuple[Any, ...] = pickle.loads(bytes(chunks[_HEADER.size : _HEADER.size + need]))
    return result


def _reap(pid: int, deadline: float) -> int:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.001)


def run_in_child(
    func: Callable[..., T],
    *args: Any,
    route: str = "os.fork",
    timeout: float = 30.0,
    **kwargs: Any,
) -> T:
    """Call ``func(*args, **kwargs)`` in a child forked by ``route``; return its result.

    An exception in the child is re-raised here with the child's traceback as
    its cause. A child that crashes or exits without answering raises
    :class:`ChildFailed`; one that takes longer than ``timeout`` seconds is
    killed and raises ``TimeoutError``.
    """
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    if route not in available_routes():
        raise ValueError(f"route {route!r} is not available on {sys.platform}/{platform.machine()}")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    read_fd, write_fd = os.pipe()
    deadline = time.monotonic() + timeout
    process = None
    try:
        if route == "multiprocessing":
            import multiprocessing

            process = multiprocessing.get_context("fork").Process(
                target=_child_main, args=(write_fd, func, args, kwargs), daemon=True
            )
            process.start()
            pid = process.pid
            assert pid is not None
        else:
            pid = _raw_fork(route)
            if pid == 0:
                os.close(read_fd)
                _child_main(write_fd, func, args, kwargs)
        os.close(write_fd)
        write_fd = -1
        try:
            result = _read_result(read_fd, pid, deadline, route)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        status = _reap(pid, deadline + 5)
    finally:
        os.close(read_fd)
        if write_fd != -1:
            os.close(write_fd)
        if process is not None:
            process.join(0)
    if result[0] == "ok":
        return result[1]  # type: ignore[no-any-return]
    if result[0] == "error":
        exc, text = result[1], result[2]
        if exc is None:
            raise ChildFailed(f"the child ({route}) raised an exception that cannot be pickled:\n{text}")
        raise exc from RemoteTraceback(text)
    raise ChildFailed(f"the child ({route}) died without answering ({_describe(status)})")


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
