"""The pytest plugin, tested with itself: ``fork_child`` and ``fork_route`` really fork."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import inherit
from inherit.testing import ROUTES, ChildFailed, RemoteTraceback, available_routes, run_in_child

pytest_plugins = ["pytester"]

ForkChild = Callable[..., Any]


def _square(x: int, *, plus: int = 0) -> int:
    return x * x + plus


def _raise_key_error() -> None:
    raise KeyError("missing in the child")


class _NeedsTwoArgs(Exception):
    """Pickles, but cannot be rebuilt from its args: unpickling calls __init__(msg) only."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _raise_unrebuildable() -> None:
    raise _NeedsTwoArgs("cannot come back", 7)


def _exit_3() -> None:
    os._exit(3)


def _sys_exit_5() -> None:
    sys.exit(5)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _hang(write_fd: int) -> None:
    os.write(write_fd, str(os.getpid()).encode())
    os.close(write_fd)
    while True:
        signal.pause()


def test_returns_the_childs_value(fork_child: ForkChild, fork_route: str) -> None:
    assert fork_child(_square, 7, route=fork_route, plus=1) == 50


def test_runs_in_another_process(fork_child: ForkChild, fork_route: str) -> None:
    assert fork_child(os.getpid, route=fork_route) != os.getpid()


def test_closures_need_no_pickling(fork_child: ForkChild, fork_route: str) -> None:
    box = {"value": 41}
    assert fork_child(lambda: box["value"] + 1, route=fork_route) == 42


def test_zero_on_fork_region_reads_zero(fork_child: ForkChild, fork_route: str) -> None:
    """What the plugin is for: the library's promise, over every route."""
    with inherit.zero_on_fork(32) as region:
        region[:] = b"k" * 32
        assert fork_child(bytes, region, route=fork_route) == bytes(32)
        assert bytes(region) == b"k" * 32


def test_exception_is_reraised_with_remote_traceback(fork_child: ForkChild, fork_route: str) -> None:
    with pytest.raises(KeyError, match="missing in the child") as info:
        fork_child(_raise_key_error, route=fork_route)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "_raise_key_error" in cause.text
    assert "--- traceback in the child ---" in str(cause)


def test_unpicklable_exception_is_child_failed(fork_child: ForkChild) -> None:
    class LocalError(Exception):  # a local class cannot be pickled
        pass

    def boom() -> None:
        raise LocalError("local")

    with pytest.raises(ChildFailed, match="cannot be pickled") as info:
        fork_child(boom)
    assert "LocalError" in str(info.value)


def test_exception_that_cannot_be_rebuilt_is_child_failed(fork_child: ForkChild) -> None:
    with pytest.raises(ChildFailed, match="cannot be pickled") as info:
        fork_child(_raise_unrebuildable)
    assert "cannot come back" in str(info.value)


def test_unpicklable_result_is_child_failed(fork_child: ForkChild) -> None:
    with pytest.raises(ChildFailed, match="returned a function that cannot be pickled"):
        fork_child(lambda: lambda: None)


def test_exit_status_is_child_failed(fork_child: ForkChild, fork_route: str) -> None:
    with pytest.raises(ChildFailed, match="exited with status 3") as info:
        fork_child(_exit_3, route=fork_route)
    assert info.value.exitcode == 3
    assert info.value.signum is None
    assert info.value.route == fork_route


def test_sys_exit_is_child_failed_not_system_exit(fork_child: ForkChild) -> None:
    with pytest.raises(ChildFailed, match=r"sys\.exit\(5\)") as info:
        fork_child(_sys_exit_5)
    assert info.value.exitcode == 5


def test_killed_by_signal_is_child_failed(fork_child: ForkChild, fork_route: str) -> None:
    with pytest.raises(ChildFailed, match="killed by signal SIGKILL") as info:
        fork_child(_kill_self, route=fork_route)
    assert info.value.exitcode == -signal.SIGKILL
    assert info.value.signum == signal.SIGKILL


def test_timeout_kills_and_reaps_the_child(fork_child: ForkChild, fork_route: str) -> None:
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(TimeoutError, match="did not answer in time"):
            fork_child(_hang, write_fd, route=fork_route, timeout=0.5)
        os.close(write_fd)
        write_fd = -1
        written = os.read(read_fd, 64)
    finally:
        os.close(read_fd)
        if write_fd != -1:
            os.close(write_fd)
    if not written:
        pytest.skip("the machine was too loaded for the child to start within the 0.5 s timeout")
    pid = int(written)
    with pytest.raises(ChildProcessError):  # already reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("route", ["vfork", "", "OS.FORK"])
def test_unknown_route_is_value_error(fork_child: ForkChild, route: str) -> None:
    with pytest.raises(ValueError, match="unknown route"):
        fork_child(_square, 2, route=route)


def test_unavailable_route_is_value_error(fork_child: ForkChild, monkeypatch: pytest.MonkeyPatch) -> None:
    """A known route this machine lacks (raw syscalls off Linux, say) is refused before forking."""
    import inherit.testing

    monkeypatch.setattr(inherit.testing, "available_routes", lambda: ["os.fork"])
    for route in ROUTES[1:]:
        with pytest.raises(ValueError, match="not available"):
            fork_child(_square, 2, route=route)


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_bad_timeout_is_value_error(fork_child: ForkChild, timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        fork_child(_square, 2, timeout=timeout)


def test_fork_child_is_run_in_child(fork_child: ForkChild) -> None:
    assert fork_child is run_in_child


@pytest.mark.linux
def test_every_route_is_available_on_linux() -> None:
    assert available_routes()[:3] == ["os.fork", "multiprocessing", "libc.fork"]
    assert "syscall.clone" in available_routes()


def test_fork_route_is_one_of_the_available_routes(request: pytest.FixtureRequest, fork_route: str) -> None:
    assert fork_route in available_routes()
    assert request.node.callspec.id == fork_route


# -- the plugin as a user sees it: a separate pytest run ---------------------------------------

USER_TESTS = """
import os

import pytest

import inherit


def child_pid():
    return os.getpid()


def boom():
    raise ValueError("boom in the child")


def test_in_a_child(fork_child, fork_route):
    assert fork_child(child_pid, route=fork_route) != os.getpid()


def test_generation_moves(fork_child, fork_route):
    before = inherit.generation()
    assert fork_child(inherit.generation, route=fork_route) != before


def test_child_failure_is_reported(fork_child):
    fork_child(boom)


@pytest.mark.parametrize("fork_route", ["os.fork"])
def test_user_picks_the_route(fork_child, fork_route):
    assert fork_route == "os.fork"
    assert fork_child(child_pid, route=fork_route) != os.getpid()
"""


def _run_user_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    extra = ["-p", "inherit"] if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") else []
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *extra, *args)


def test_user_suite_runs_over_every_route(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = _run_user_pytest(pytester, "-v")
    routes = available_routes()
    result.assert_outcomes(passed=2 * len(routes) + 1, failed=1)
    for route in routes:
        result.stdout.fnmatch_lines([f"*test_in_a_child?{route}? PASSED*"])
        result.stdout.fnmatch_lines([f"*test_generation_moves?{route}? PASSED*"])
    result.stdout.fnmatch_lines(["*test_user_picks_the_route?os.fork? PASSED*"])
    result.stdout.fnmatch_lines(["*--- traceback in the child ---*", "*ValueError: boom in the child*"])


def test_plugin_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_empty="def test_nothing():\n    pass\n")
    result = _run_user_pytest(pytester, "--fixtures")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*fork_child*", "*Run a callable in a forked child*"])
    result.stdout.fnmatch_lines(["*fork_route*", "*repeated for every route available here*"])


def test_collect_lists_every_route(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_routes="def test_route(fork_route):\n    pass\n")
    result = _run_user_pytest(pytester, "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"*test_route?{route}?" for route in available_routes()])


def _fork_and_return() -> int:
    """The grandchild returns from here too; only the child's answer may reach the parent."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
    return pid


def test_a_grandchild_returning_does_not_garble_the_answer(fork_child: ForkChild) -> None:
    grandchild = fork_child(_fork_and_return)
    assert grandchild > 0
