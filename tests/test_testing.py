"""inherit.testing on a C library it cannot fully use, and with children that leave grandchildren.

Route availability is tested on Linux through test-only C libraries loaded in place of libc
(``_INHERIT_TEST_LIBC``): one that exports ``fork`` but not ``syscall`` (what OpenBSD's libc
looks like to the syscall routes), one that exports neither, one whose ``fork`` fails. Built
with ``-nostdlib`` so that a lookup in them cannot fall through to the real libc: the routes
then see exactly the symbols the shim has. The forks themselves are real.

The grandchild tests fork for real over every route: a child forks a grandchild that would
sleep for an hour, then exits; the parent must report the child's exit at once and deal with
the grandchild as documented (killed with the child's process group).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import inherit.testing
from inherit.testing import ChildFailed, run_in_child
from support import _build, run_python

ForkChild = Callable[..., Any]

# fork() passes through to the real one (found in the process's global scope: the shim is loaded
# RTLD_LOCAL, so that is libc's) and counts its calls; syscall() is not there at all.
FORK_ONLY = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/types.h>
int inherit_shim_fork_calls = 0;
static int inside = 0;  /* if the lookup ever found this function itself: fail, do not recurse */
pid_t fork(void) {
    static pid_t (*real)(void);
    if (!real) real = (pid_t (*)(void))dlsym(RTLD_DEFAULT, "fork");
    if (!real || inside) { errno = ENOSYS; return -1; }
    inherit_shim_fork_calls++;
    inside = 1;
    pid_t pid = real();
    inside = 0;
    return pid;
}
"""
FAILING_FORK = r"""
#include <errno.h>
#include <sys/types.h>
pid_t fork(void) { errno = EAGAIN; return -1; }
"""
NEITHER = "int inherit_shim_nothing_here = 0;\n"


def _shim(source: str, name: str) -> Path:
    if not sys.platform.startswith("linux"):
        pytest.skip("the -nostdlib shim libraries are built for Linux")
    # No -ldl and no libc: dlsym() on this library must not find libc's symbols through its dependencies.
    library = _build(source, name, ".so", ["-shared", "-fPIC", "-O1", "-nostdlib"])
    lib = ctypes.CDLL(str(library))
    assert not hasattr(lib, "syscall"), "the shim must not export syscall(): the test would prove nothing"
    return library


@pytest.fixture(scope="module")
def fork_only() -> Path:
    library = _shim(FORK_ONLY, "inherit-libc-fork-only")
    assert hasattr(ctypes.CDLL(str(library)), "fork")
    return library


ROUTES_WITH = """
import json, os
from inherit import testing
routes = testing.available_routes()
why = {r: testing.unavailable_reason(r) for r in testing.ROUTES if r not in routes}
answers = {r: testing.run_in_child(os.getpid, route=r) != os.getpid() for r in routes}
print(json.dumps({"routes": routes, "why": why, "answers": answers}))
"""


def _run(code: str, library: Path | str) -> dict[str, Any]:
    out = run_python(code, env={inherit.testing.LIBC_ENV: str(library)})
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_libc_without_syscall_offers_libc_fork_only(fork_only: Path) -> None:
    result = _run(ROUTES_WITH, fork_only)
    assert result["routes"] == ["os.fork", "multiprocessing", "libc.fork"]
    assert result["why"] == {
        "syscall.fork": "the C library exports no syscall()",
        "syscall.clone": "the C library exports no syscall()",
    }
    assert all(result["answers"].values()), result


def test_libc_fork_route_calls_the_loaded_library(fork_only: Path) -> None:
    code = """
    import ctypes, json, os, sys
    from inherit.testing import run_in_child
    counter = ctypes.c_int.in_dll(ctypes.CDLL(sys.argv[1]), "inherit_shim_fork_calls")
    before = counter.value
    child = run_in_child(os.getpid, route="libc.fork")
    print(json.dumps({"calls": counter.value - before, "forked": child != os.getpid()}))
    """
    out = run_python(code, env={inherit.testing.LIBC_ENV: str(fork_only)}, args=[str(fork_only)])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"calls": 1, "forked": True}


def test_unavailable_route_is_refused_with_the_reason(fork_only: Path) -> None:
    code = """
    import json
    from inherit.testing import run_in_child
    try:
        run_in_child(int, route="syscall.clone")
    except ValueError as exc:
        print(json.dumps(str(exc)))
    """
    message = _run(code, fork_only)
    assert "'syscall.clone' is not available" in message
    assert "exports no syscall()" in message


def test_check_is_clean_without_syscall(fork_only: Path) -> None:
    """``python -m inherit check`` runs what exists and says why the rest cannot run."""
    env = {inherit.testing.LIBC_ENV: str(fork_only)}
    code = "import sys, inherit.__main__ as m; sys.exit(m.main(sys.argv[1:]))"
    text = run_python(code, env=env, args=["check"], timeout=120)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "Traceback" not in text.stderr
    assert "syscall.clone: not available here (the C library exports no syscall())" in text.stdout
    assert "ok:" in text.stdout
    data = run_python(code, env=env, args=["check", "--json"], timeout=120)
    assert data.returncode == 0, data.stdout + data.stderr
    report = json.loads(data.stdout)
    assert report["ok"] is True
    assert [row["route"] for row in report["routes"]] == ["os.fork", "multiprocessing", "libc.fork"]


def test_library_without_fork_or_syscall_leaves_the_python_routes() -> None:
    library = _shim(NEITHER, "inherit-libc-empty")
    result = _run(ROUTES_WITH, library)
    assert result["routes"] == ["os.fork", "multiprocessing"]
    assert result["why"]["libc.fork"] == "the C library exports no fork()"


def test_library_that_cannot_be_loaded_leaves_the_python_routes(tmp_path: Path) -> None:
    result = _run(ROUTES_WITH, tmp_path / "no-such-libc.so")
    assert result["routes"] == ["os.fork", "multiprocessing"]
    assert result["why"]["libc.fork"].startswith("the C library cannot be loaded")


def test_failed_fork_closes_the_pipe_and_check_reports_it() -> None:
    library = _shim(FAILING_FORK, "inherit-libc-fork-fails")
    code = """
    import errno, json, os
    from inherit._check import run_check
    from inherit.testing import run_in_child
    fd_dir = "/proc/self/fd"
    before = set(os.listdir(fd_dir))
    errors = []
    for _ in range(3):
        try:
            run_in_child(int, route="libc.fork")
        except OSError as exc:
            errors.append(errno.errorcode[exc.errno])
    leaked = sorted(set(os.listdir(fd_dir)) - before)
    report = run_check(["libc.fork", "os.fork"], timeout=30).as_dict()
    print(json.dumps({"errors": errors, "leaked": leaked, "report": report}))
    """
    result = _run(code, library)
    assert result["errors"] == ["EAGAIN"] * 3
    assert result["leaked"] == []
    report = result["report"]
    assert report["ok"] is False
    failed, fine = report["routes"]
    assert failed["route"] == "libc.fork"
    assert failed["error"].startswith("BlockingIOError: [Errno 11] libc.fork failed"), failed  # EAGAIN
    assert fine["route"] == "os.fork" and fine["ok"] is True


# -- a dead child is reported at once, and its grandchildren are dealt with ---------------------------


@pytest.fixture
def side_channel() -> Iterator[tuple[int, int]]:
    """A pipe the grandchild holds open while it lives; the child writes the grandchild's pid into it."""
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def _leave_a_grandchild(write_fd: int, new_session: bool, then: str) -> int:
    """Fork a grandchild that sleeps for an hour, then exit (status 3) or return."""
    pid = os.fork()
    if pid == 0:
        if new_session:
            os.setsid()  # leaves the child's process group: not followed
        signal.alarm(3600)  # dies by itself eventually, whatever happens to the test
        while True:
            signal.pause()
    if new_session:  # do not exit before it has left, or it would still be in the group
        for _ in range(10000):
            if os.getsid(pid) == pid:
                break
            time.sleep(0.001)
    os.write(write_fd, f"{pid}\n".encode())
    if then == "exit":
        os._exit(3)
    return pid


def _grandchild_exits(read_fd: int, write_fd: int, bound: float = 30.0) -> tuple[int, bool]:
    """The grandchild's pid, and whether it exited within ``bound`` seconds (its end of the pipe closed)."""
    os.close(write_fd)  # ours; now only the grandchild holds the write end
    pid = int(os.read(read_fd, 64).split()[0])
    import select

    ready, _, _ = select.select([read_fd], [], [], bound)
    return pid, bool(ready) and os.read(read_fd, 64) == b""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


WATCHERS = ["pidfd", "waitid", "reap"]


@pytest.fixture(params=WATCHERS)
def watcher(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way the parent can see the child exit; the ones this platform lacks are skipped."""
    name: str = request.param
    if name == "pidfd" and not inherit.testing._use_pidfd:
        pytest.skip("no os.pidfd_open here")
    if name == "waitid" and not (hasattr(os, "waitid") and hasattr(os, "WNOWAIT")):
        pytest.skip("no os.waitid with WNOWAIT here")
    monkeypatch.setattr(inherit.testing, "_use_pidfd", name == "pidfd")
    monkeypatch.setattr(inherit.testing, "_use_waitid", name in ("pidfd", "waitid"))
    return name


def test_dead_child_with_a_grandchild_is_child_failed(
    fork_child: ForkChild, fork_route: str, watcher: str, side_channel: tuple[int, int]
) -> None:
    read_fd, write_fd = side_channel
    with pytest.raises(ChildFailed, match="exited with status 3 without answering") as info:
        fork_child(_leave_a_grandchild, write_fd, False, "exit", route=fork_route, timeout=20)
    assert info.value.exitcode == 3
    pid, exited = _grandchild_exits(read_fd, write_fd, bound=30.0 if watcher != "reap" else 0.5)
    if watcher == "reap":  # the child was reaped to see it exit: its group id may be reused, so no kill
        assert not exited, "documented: without pidfd or waitid the grandchild is left running"
        _kill(pid)
    else:
        if not exited:
            _kill(pid)
        assert exited, "the grandchild left in the child's process group was not killed"


def test_grandchild_of_a_child_that_answered_is_killed(
    fork_child: ForkChild, fork_route: str, side_channel: tuple[int, int]
) -> None:
    if not (inherit.testing._use_pidfd or inherit.testing._use_waitid):
        pytest.skip("grandchildren are killed only where the child's exit is seen without reaping it")
    read_fd, write_fd = side_channel
    grandchild = fork_child(_leave_a_grandchild, write_fd, False, "return", route=fork_route, timeout=20)
    pid, exited = _grandchild_exits(read_fd, write_fd)
    if not exited:
        _kill(pid)
    assert pid == grandchild
    assert exited, "the grandchild outlived run_in_child"


def test_grandchild_that_left_the_group_is_not_followed(
    fork_child: ForkChild, side_channel: tuple[int, int]
) -> None:
    """Only the child's own process group is signalled: a grandchild in a session of its own survives."""
    read_fd, write_fd = side_channel
    with pytest.raises(ChildFailed) as info:
        fork_child(_leave_a_grandchild, write_fd, True, "exit", timeout=20)
    assert info.value.exitcode == 3
    pid, exited = _grandchild_exits(read_fd, write_fd, bound=0.5)
    _kill(pid)
    assert not exited


def _my_group() -> tuple[int, int]:
    return os.getpid(), os.getpgid(0)


def test_child_leads_its_own_process_group(fork_child: ForkChild, fork_route: str) -> None:
    pid, group = fork_child(_my_group, route=fork_route)
    assert group == pid != os.getpgid(0)


def test_timeout_kills_the_childs_group(side_channel: tuple[int, int]) -> None:
    read_fd, write_fd = side_channel

    def hang() -> None:
        _leave_a_grandchild(write_fd, False, "return")
        signal.pause()

    with pytest.raises(TimeoutError):
        run_in_child(hang, timeout=2.0)
    pid, exited = _grandchild_exits(read_fd, write_fd)
    if not exited:
        _kill(pid)
    assert exited


@pytest.mark.parametrize(
    "timeout, error",
    [
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        (1e300, ValueError),
        (0, ValueError),
        (-1, ValueError),
        ("3", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_a_bad_timeout_is_a_clear_error(timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout must be"):
        run_in_child(int, timeout=timeout)  # type: ignore[arg-type]
