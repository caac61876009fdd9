"""Run a callable in a forked child made by a chosen route; get its result back.

For testing fork safety: the child's return value (or exception) comes back
over a pipe, pickled. Routes differ in which hooks run in the child, and so
in what code relying on ``os.register_at_fork`` can notice:

=====================  ==========================  ========================================
route                  made by                     hooks that run in the child
=====================  ==========================  ========================================
``os.fork``            :func:`os.fork`             Python's at-fork hooks, pthread_atfork
``multiprocessing``    the ``fork`` start method   Python's at-fork hooks, pthread_atfork
``libc.fork``          ``fork()`` from C (ctypes)  pthread_atfork only
``syscall.fork``       raw ``fork`` syscall        none
``syscall.clone``      raw ``clone(SIGCHLD)``      none
=====================  ==========================  ========================================

The raw syscall routes exist on Linux only (``syscall.fork`` not on arm64 and
riscv64, which have no ``fork`` syscall); :func:`available_routes` says what
this machine offers.
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
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["ROUTES", "ChildFailed", "RemoteTraceback", "available_routes", "run_in_child"]

T = TypeVar("T")

#: Every route :func:`run_in_child` knows, whether or not this machine has it.
ROUTES = ("os.fork", "multiprocessing", "libc.fork", "syscall.fork", "syscall.clone")

# Linux syscall numbers for fork and clone (None: no fork syscall on that arch).
# Only for 64-bit pointers on 64-bit names: a 32-bit Python on a 64-bit kernel
# uses the other table, and a wrong number would call some other syscall.
_SYSCALLS: dict[str, tuple[int | None, int]] = {
    "x86_64": (57, 56),
    "amd64": (57, 56),
    "aarch64": (None, 220),
    "arm64": (None, 220),
    "riscv64": (None, 220),
    "ppc64le": (2, 120),
    "ppc64": (2, 120),
    "i386": (2, 120),
    "i686": (2, 120),
    "armv7l": (2, 120),
}
_SYSCALLS_32 = frozenset({"i386", "i686", "armv7l"})
_HEADER = struct.Struct("!Q")


class ChildFailed(RuntimeError):
    """The child crashed, was killed, exited, or its answer could not be sent back.

    ``exitcode`` follows :mod:`multiprocessing`: the exit status, or ``-N``
    when signal ``N`` killed the child; ``None`` if the child did exit cleanly
    but its answer was unusable. ``signum`` is ``N`` or ``None``.
    """

    def __init__(self, message: str, *, route: str | None = None, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.route = route
        self.exitcode = exitcode

    @property
    def signum(self) -> int | None:
        """The signal that killed the child, if one did."""
        return -self.exitcode if self.exitcode is not None and self.exitcode < 0 else None


class RemoteTraceback(Exception):
    """The child's formatted traceback, set as the ``__cause__`` of a re-raised exception.

    Tracebacks do not pickle; this keeps the child's frames readable in the
    parent's report.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\n--- traceback in the child ---\n{self.text}"


def _syscall_numbers() -> tuple[int | None, int] | None:
    if not sys.platform.startswith("linux"):
        return None
    machine = platform.machine()
    numbers = _SYSCALLS.get(machine)
    if numbers is None:
        return None
    if (sys.maxsize > 2**32) == (machine in _SYSCALLS_32):  # pointer size must match the table
        return None
    return numbers


def available_routes() -> list[str]:
    """The routes this platform supports, in the order of :data:`ROUTES`."""
    if not hasattr(os, "fork"):
        return []
    routes = ["os.fork", "multiprocessing", "libc.fork"]
    numbers = _syscall_numbers()
    if numbers is not None:
        if numbers[0] is not None:
            routes.append("syscall.fork")
        routes.append("syscall.clone")
    return routes


_lib: Any = None


def _libc() -> Any:
    global _lib
    if _lib is None:
        import ctypes

        # PyDLL keeps the GIL across the call, so the child starts with it held.
        lib = ctypes.PyDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.fork.restype = ctypes.c_int
        _lib = lib
    return _lib


def _raw_fork(route: str) -> int:
    """Fork by ``route`` (not multiprocessing); return the pid like fork() does."""
    if route == "os.fork":
        return os.fork()
    import ctypes

    lib = _libc()
    if route == "libc.fork":
        pid = int(lib.fork())
    else:
        numbers = _syscall_numbers()
        assert numbers is not None  # run_in_child checked available_routes()
        fork_nr, clone_nr = numbers
        if route == "syscall.fork":
            pid = int(lib.syscall(ctypes.c_long(fork_nr or 0)))
        else:
            zero = ctypes.c_long(0)
            pid = int(
                lib.syscall(ctypes.c_long(clone_nr), ctypes.c_long(signal.SIGCHLD), zero, zero, zero, zero)
            )
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{route} failed: {os.strerror(err)}")
    return pid


def _flush_std_streams() -> None:
    """Flush before forking (no duplicated output) and before ``os._exit`` (no lost output)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _encode(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Call ``func`` and pickle what happened; never raises."""
    try:
        value = func(*args, **kwargs)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return pickle.dumps(("exit", repr(exc.code), traceback.format_exc(), status))
    except BaseException as exc:
        text = traceback.format_exc()
        try:
            payload = pickle.dumps(("error", exc, text))
            pickle.loads(payload)  # an exception that pickles but cannot be rebuilt is no use
        except Exception:
            payload = pickle.dumps(("error", None, text))
        return payload
    try:
        return pickle.dumps(("ok", value))
    except Exception:
        return pickle.dumps(("unpicklable", type(value).__name__, traceback.format_exc()))


def _child_main(
    write_fd: int, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    code = 0
    me = os.getpid()
    try:
        payload = _encode(func, args, kwargs)
        if os.getpid() != me:  # a grandchild that ``func`` forked came back here: only the child answers
            return
        os.write(write_fd, _HEADER.pack(len(payload)))
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
    except BaseException:
        code = 70  # could not even report (EX_SOFTWARE)
    finally:
        _flush_std_streams()
        os._exit(code)


def _read_answer(read_fd: int, deadline: float, route: str) -> bytes | None:
    """The child's pickled answer; None if it closed the pipe without one."""
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
            return None
        chunks += data
        if need is None and len(chunks) >= _HEADER.size:
            (need,) = _HEADER.unpack_from(chunks)
    return bytes(chunks[_HEADER.size : _HEADER.size + need])


class _Child:
    """A child made by some route: wait for it, or kill it. Always reaped exactly once."""

    def __init__(self, pid: int, process: BaseProcess | None) -> None:
        self.pid = pid
        self.process = process  # multiprocessing reaps its own children

    def wait(self, deadline: float) -> int:
        """Exit code, multiprocessing-style (-N for signal N); kill at the deadline."""
        if self.process is not None:
            self.process.join(max(0.0, deadline - time.monotonic()))
            if self.process.exitcode is None:
                self.kill()
            assert self.process.exitcode is not None
            return self.process.exitcode
        delay = 0.0005
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                return self.kill()
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def kill(self) -> int:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            assert self.process.exitcode is not None
            return self.process.exitcode
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited meanwhile; still ours to reap
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


def run_in_child(
    func: Callable[..., T],
    *args: Any,
    route: str = "os.fork",
    timeout: float = 30.0,
    **kwargs: Any,
) -> T:
    """Call ``func(*args, **kwargs)`` in a child forked by ``route``; return its result.

    Arguments are not pickled (the child is a fork and has them already); the
    result is. An exception raised in the child is re-raised here with a
    :class:`RemoteTraceback` holding the child's traceback as its
    ``__cause__``. :class:`ChildFailed` is raised when the child exits
    (``os._exit``, ``sys.exit``) or dies without answering, or its exception or
    result cannot be pickled. A child still running after ``timeout`` seconds
    is killed and reaped, and ``TimeoutError`` is raised.
    """
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    if route not in available_routes():
        raise ValueError(f"route {route!r} is not available on {sys.platform}/{platform.machine()}")
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    read_fd, write_fd = os.pipe()
    deadline = time.monotonic() + timeout
    child: _Child | None = None
    try:
        _flush_std_streams()
        if route == "multiprocessing":
            import multiprocessing

            process = multiprocessing.get_context("fork").Process(
                target=_child_main, args=(write_fd, func, args, kwargs)
            )  # not daemonic: a daemonic process may not start children (no nesting)
            process.start()
            assert process.pid is not None
            child = _Child(process.pid, process)
        else:
            pid = _raw_fork(route)
            if pid == 0:
                os.close(read_fd)
                _child_main(write_fd, func, args, kwargs)
            child = _Child(pid, None)
        os.close(write_fd)
        write_fd = -1
        try:
            answer = _read_answer(read_fd, deadline, route)
        except BaseException:  # TimeoutError, KeyboardInterrupt: never leave the child behind
            child.kill()
            raise
        exitcode = child.wait(deadline + 5)
    finally:
        os.close(read_fd)
        if write_fd != -1:
            os.close(write_fd)
    if answer is None:
        raise ChildFailed(
            f"the child ({route}) {_describe(exitcode)} without answering", route=route, exitcode=exitcode
        )
    try:
        result: tuple[Any, ...] = pickle.loads(answer)
    except Exception as exc:
        raise ChildFailed(
            f"the child's ({route}) answer cannot be unpickled here: {exc!r}", route=route
        ) from exc
    kind = result[0]
    if kind == "ok":
        return result[1]  # type: ignore[no-any-return]
    if kind == "error":
        error, text = result[1], result[2]
        if error is None:
            raise ChildFailed(
                f"the child ({route}) raised an exception that cannot be pickled:\n{text}", route=route
            )
        raise error from RemoteTraceback(text)
    if kind == "exit":
        raise ChildFailed(
            f"the child ({route}) called sys.exit({result[1]})", route=route, exitcode=result[3]
        ) from RemoteTraceback(result[2])
    raise ChildFailed(
        f"the child ({route}) returned a {result[1]} that cannot be pickled:\n{result[2]}", route=route
    )


def _describe(exitcode: int) -> str:
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        return f"was killed by signal {name}"
    return f"exited with status {exitcode}"
