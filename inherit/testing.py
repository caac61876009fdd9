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

A route is offered only where it exists: ``libc.fork`` where the C library
exports ``fork()``, the raw syscall routes on Linux only, where the C library
exports ``syscall()`` and the numbers are known (``syscall.fork`` not on arm64
and riscv64, which have no ``fork`` syscall). :func:`available_routes` says what
this machine offers.

Each child leads a process group of its own. The parent watches the child
itself, not only the pipe: a child that exits without answering is reported at
once, even if a grandchild still holds the pipe. Whatever is left in the
child's group when the call ends (grandchildren that did not leave it with
``setsid``/``setpgid``) is killed with SIGKILL before the child is reaped.

Test-only switch: ``_INHERIT_TEST_LIBC`` names a shared library to load in
place of the process's C library for the ``libc.fork`` and syscall routes (a
library without ``syscall()`` simulates OpenBSD's libc). It is read once, at
the first use of those routes, and is not meant for anything but tests.
"""

from __future__ import annotations

import math
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

__all__ = [
    "ROUTES",
    "ChildFailed",
    "RemoteTraceback",
    "available_routes",
    "run_in_child",
    "unavailable_reason",
]

T = TypeVar("T")

#: Every route :func:`run_in_child` knows, whether or not this machine has it.
ROUTES = ("os.fork", "multiprocessing", "libc.fork", "syscall.fork", "syscall.clone")

#: Test-only: load this shared library instead of the process's C library.
LIBC_ENV = "_INHERIT_TEST_LIBC"

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

# How the parent sees the child exit without reaping it (so its process group id
# cannot be reused before the group is killed). Tests turn these off to exercise
# the fallbacks; with neither, the child is reaped to see it exit and its group is
# then left alone.
_use_pidfd = hasattr(os, "pidfd_open")
_use_waitid = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")
_POLL_LIMIT = 0.05  # longest sleep between looks at a child's state when no pidfd wakes us


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


# -- which routes exist here -------------------------------------------------------------------------

_lib: Any = None
_lib_error: str | None = None


def _libc() -> Any:
    """The C library the libc and syscall routes call, or None if it cannot be loaded."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        import ctypes

        name = os.environ.get(LIBC_ENV) or None
        try:
            # PyDLL keeps the GIL across the call, so the child starts with it held.
            lib = ctypes.PyDLL(name, use_errno=True)
        except OSError as exc:
            _lib_error = f"the C library cannot be loaded ({exc})"
            return None
        if hasattr(lib, "fork"):  # attribute access is a dlsym(): touch only what exists
            lib.fork.restype = ctypes.c_int
        if hasattr(lib, "syscall"):
            lib.syscall.restype = ctypes.c_long
        _lib = lib
    return _lib


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


def unavailable_reason(route: str) -> str | None:
    """Why ``route`` cannot run on this machine, or None if it can (see :func:`available_routes`)."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    if not hasattr(os, "fork"):
        return "this platform has no fork()"
    if route in ("os.fork", "multiprocessing"):
        return None
    if route.startswith("syscall."):  # decide before loading anything
        if not sys.platform.startswith("linux"):
            return "raw fork/clone system calls are used on Linux only"
        numbers = _syscall_numbers()
        if numbers is None:
            bits = 64 if sys.maxsize > 2**32 else 32
            return f"no known syscall numbers for {platform.machine()} with a {bits}-bit Python"
        if route == "syscall.fork" and numbers[0] is None:
            return f"{platform.machine()} has no fork system call"
    lib = _libc()
    if lib is None:
        return _lib_error
    symbol = "fork" if route == "libc.fork" else "syscall"
    if not hasattr(lib, symbol):
        return f"the C library exports no {symbol}()"
    return None


def available_routes() -> list[str]:
    """The routes this platform supports, in the order of :data:`ROUTES`."""
    return [route for route in ROUTES if unavailable_reason(route) is None]


def _raw_fork(route: str) -> int:
    """Fork by ``route`` (not multiprocessing); return the pid like fork() does."""
    if route == "os.fork":
        return os.fork()
    problem = unavailable_reason(route)
    if problem is not None:
        raise ValueError(f"route {route!r} is not available here: {problem}")
    import ctypes

    lib = _libc()
    if route == "libc.fork":
        pid = int(lib.fork())
    else:
        numbers = _syscall_numbers()
        assert numbers is not None  # unavailable_reason() checked
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


# -- the child's side ----------------------------------------------------------------------------------


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
        try:
            os.setpgid(0, 0)  # a group of its own, so what it leaves behind can be found and killed
        except OSError:
            pass
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


# -- the parent's side ---------------------------------------------------------------------------------


def _ready(fds: list[int], timeout: float) -> set[int]:
    """The descriptors among ``fds`` that are readable (or hung up) within ``timeout`` seconds."""
    if hasattr(select, "poll"):  # no FD_SETSIZE limit
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return {fd for fd, _ in poller.poll(math.ceil(max(timeout, 0.0) * 1000))}
    readable, _, _ = select.select(fds, [], [], max(timeout, 0.0))
    return set(readable)


class _Child:
    """A child made by some route: watch it, wait for it, or kill it and its group. Reaped once."""

    def __init__(self, pid: int, process: BaseProcess | None) -> None:
        self.pid = pid
        self.process = process  # multiprocessing reaps its own children
        self.reaped = False
        self.exitcode: int | None = None  # multiprocessing-style, once reaped; None if unknown
        self.pidfd: int | None = None
        try:
            os.setpgid(pid, pid)  # the child does the same; whichever runs first wins the race
        except OSError:
            pass  # it did already, or has exited (then it left no group behind)
        if _use_pidfd:
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:  # an older kernel, or a sandbox that refuses it
                pass

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def exited(self) -> bool:
        """Whether the child has exited; it stays unreaped where the platform can tell that way."""
        if self.reaped:
            return True
        if self.pidfd is not None:
            return bool(_ready([self.pidfd], 0))
        if _use_waitid:
            try:
                return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            except ChildProcessError:
                return True  # collected elsewhere (a SIGCHLD handler, say)
            except OSError:
                pass
        self._reap(block=False)
        return self.reaped

    def _reap(self, block: bool) -> None:
        if self.reaped:
            return
        if self.process is not None:
            if block:
                self.process.join()
            if self.process.exitcode is not None:
                self.reaped, self.exitcode = True, self.process.exitcode
            return
        try:
            done, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # collected elsewhere: the status is lost
            self.reaped = True
            return
        if done:
            self.reaped, self.exitcode = True, os.waitstatus_to_exitcode(status)

    def _kill_group(self) -> None:
        """SIGKILL whatever is left in the child's process group.

        Only while the child is unreaped: its pid, and so the group id, cannot
        belong to anyone else then. The test process is never in that group.
        """
        if self.reaped:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:  # no such group (the child never made it), or nothing we may signal
            pass

    def finish(self, deadline: float) -> int | None:
        """Wait for the child (killing it at the deadline), kill its leftovers, reap it."""
        try:
            delay = 0.0005
            while not self.exited():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self.kill()
                if self.pidfd is not None:
                    _ready([self.pidfd], remaining)
                else:
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, _POLL_LIMIT)
            self._kill_group()
            self._reap(block=True)
            return self.exitcode
        except BaseException:
            self.kill()
            raise

    def kill(self) -> int | None:
        """SIGKILL the child and its group now, and reap it."""
        self._kill_group()
        if not self.reaped:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass  # exited meanwhile; still ours to reap
        self._reap(block=True)
        return self.exitcode


def _read_answer(read_fd: int, child: _Child, deadline: float, route: str) -> bytes | None:
    """The child's pickled answer; None if it exited or closed the pipe without one."""
    answer = _Answer()
    delay = 0.0005
    while not answer.complete():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the child ({route}) did not answer in time")
        if child.pidfd is not None:
            ready = _ready([read_fd, child.pidfd], remaining)
        else:  # nothing wakes us when the child exits: look again soon
            ready = _ready([read_fd], min(delay, remaining))
            delay = min(delay * 2, _POLL_LIMIT)
        if read_fd in ready:
            if not answer.read(read_fd):
                return None  # end of file: every holder of the write end is gone
            delay = 0.0005
        elif child.exited():
            # All the child wrote is in the pipe now; a grandchild may hold the write end open.
            while not answer.complete() and _ready([read_fd], 0) and answer.read(read_fd):
                pass
            break
    return answer.payload()


class _Answer:
    """A length-prefixed payload arriving in pieces."""

    def __init__(self) -> None:
        self.chunks = bytearray()
        self.need: int | None = None

    def read(self, fd: int) -> bool:
        """Append what ``fd`` has; False at end of file."""
        data = os.read(fd, 65536)
        self.chunks += data
        if self.need is None and len(self.chunks) >= _HEADER.size:
            (self.need,) = _HEADER.unpack_from(self.chunks)
        return bool(data)

    def complete(self) -> bool:
        return self.need is not None and len(self.chunks) >= _HEADER.size + self.need

    def payload(self) -> bytes | None:
        if self.need is None or not self.complete():
            return None
        return bytes(self.chunks[_HEADER.size : _HEADER.size + self.need])


#: The longest ``timeout`` run_in_child() accepts (poll() counts in int milliseconds).
MAX_TIMEOUT = 2_000_000


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
    result cannot be pickled; a child's exit is seen at once, even when a
    grandchild holds the pipe open. A child still running after ``timeout``
    seconds is killed and reaped, and ``TimeoutError`` is raised. Either way,
    what is left in the child's process group is killed before this returns.
    """
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    if route not in available_routes():
        why = unavailable_reason(route) or "not offered here"
        raise ValueError(f"route {route!r} is not available on {sys.platform}/{platform.machine()}: {why}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses nan; poll() takes at most ~24 days
        raise ValueError(f"timeout must be positive and at most {MAX_TIMEOUT} seconds, got {timeout!r}")
    deadline = time.monotonic() + timeout
    child: _Child | None = None
    read_fd, write_fd = os.pipe()
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
            answer = _read_answer(read_fd, child, deadline, route)
        except BaseException:  # TimeoutError, KeyboardInterrupt: never leave the child behind
            child.kill()
            raise
        exitcode = child.finish(deadline + 5)
    finally:
        os.close(read_fd)
        if write_fd != -1:
            os.close(write_fd)
        if child is not None:
            child.close()
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


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "exited (its status was collected elsewhere)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        return f"was killed by signal {name}"
    return f"exited with status {exitcode}"
