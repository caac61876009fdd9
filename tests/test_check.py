"""``python -m inherit check``: what it says when a route fails, and which backend a leak is blamed on.

The kernel-backend case is real: the LD_PRELOAD fault shim lets the first WIPEONFORK calls
through (so the madvise backend is verified and chosen) and turns later ones into silent
no-ops, as a broken emulator would; the children then really read the parent's bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import inherit
import inherit.testing
from faultshim import fault_env
from inherit._check import CheckReport, RouteResult, format_table, run_check

LEAK = "'old view zeroed: no' is a leak under the madvise backend"
INFORMATIONAL = "note: 'old view zeroed' is informational"


def run_check_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    full_env.pop("INHERIT_BACKEND", None)  # the point is what the default choice does
    return subprocess.run(
        [sys.executable, "-m", "inherit", "check", *args],
        env=full_env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.linux
@pytest.mark.parametrize("let_through", ["1", "2"])
def test_kernel_backend_leak_through_an_old_view_is_a_failure(let_through: str, tmp_path: Path) -> None:
    env = {**fault_env(madvise="IGNORE_WIPE", madvise_after=let_through), "XDG_CACHE_HOME": str(tmp_path)}
    data = json.loads(run_check_cli("--json", env=env).stdout)
    if data["backend"] != "madvise":
        pytest.fail(f"the shim was meant to leave madvise chosen, not {data['backend']!r}: {data}")
    assert data["kernel_wipes"] is True and data["ok"] is False
    assert all(row["old_view_zeroed"] is False and row["ok"] is False for row in data["routes"])

    text = run_check_cli(env=env)
    assert text.returncode == 1, text.stdout + text.stderr
    out = text.stdout
    assert "backend madvise (the kernel wipes)" in out
    assert f"FAILED: {LEAK}" in out
    assert "the kernel accepted the" in out
    assert INFORMATIONAL not in out
    assert "getpid backend cannot see" not in out


def test_getpid_backend_keeps_the_informational_note(tmp_path: Path) -> None:
    env = {"INHERIT_BACKEND": "getpid", "XDG_CACHE_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "inherit", "check"],
        env={**os.environ, **env},
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    hookless = {"libc.fork", "syscall.fork", "syscall.clone"} & set(inherit.testing.available_routes())
    if not hookless:
        pytest.skip("no route here skips Python's at-fork hooks")
    assert INFORMATIONAL in result.stdout
    assert "is a leak" not in result.stdout


def test_a_route_that_raises_anything_is_reported_and_the_rest_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OpenBSD failure (AttributeError from a missing libc symbol), injected into one route."""
    real = inherit.testing.run_in_child

    def run(func: Any, *args: Any, route: str = "os.fork", **kwargs: Any) -> Any:
        if route == "multiprocessing":
            raise AttributeError("/usr/lib/libc.so.100.3: undefined symbol: syscall")
        return real(func, *args, route=route, **kwargs)

    monkeypatch.setattr(inherit.testing, "run_in_child", run)
    report = run_check(["multiprocessing", "os.fork"], timeout=30)
    broken, fine = report.routes
    assert broken.error == "AttributeError: /usr/lib/libc.so.100.3: undefined symbol: syscall"
    assert broken.ok is False and broken.zeroed is None
    assert fine.ok is True
    assert report.ok is False
    text = format_table(report)
    assert "multiprocessing: AttributeError: /usr/lib/libc.so.100.3" in text
    assert "FAILED: a child read the parent's bytes, missed the fork, or gave no answer" in text


def test_a_route_named_but_missing_here_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inherit.testing, "available_routes", lambda: ["os.fork"])
    report = run_check(["syscall.clone", "os.fork"], timeout=30)
    assert report.routes[0].error is not None
    assert report.routes[0].error.startswith("ValueError: route 'syscall.clone' is not available")
    assert report.routes[1].ok is True


def _row(route: str, view: bool, kernel: bool) -> RouteResult:
    return RouteResult(route, True, True, True, view, kernel_wipes=kernel)


def test_only_the_view_leaked_under_a_kernel_backend() -> None:
    report = CheckReport("minherit", True, [_row("os.fork", True, True), _row("libc.fork", False, True)])
    assert report.ok is False
    data = report.as_dict()
    assert [r["ok"] for r in data["routes"]] == [True, False]
    assert set(data["routes"][0]) == {
        "route",
        "zeroed",
        "generation_moved",
        "parent_kept",
        "old_view_zeroed",
        "error",
        "ok",
    }
    text = format_table(report)
    assert "FAILED: 'old view zeroed: no' is a leak under the minherit backend" in text
    assert "missed the fork" not in text  # the other columns passed
    assert INFORMATIONAL not in text


def test_the_same_row_under_getpid_is_information() -> None:
    report = CheckReport("getpid", False, [_row("os.fork", True, False), _row("libc.fork", False, False)])
    assert report.ok is True
    text = format_table(report)
    assert "\nok: every child read zeros" in text
    assert INFORMATIONAL in text and "FAILED" not in text


def test_unavailable_routes_are_listed_with_the_reason() -> None:
    report = CheckReport(
        "minherit",
        True,
        [_row("os.fork", True, True)],
        unavailable={"syscall.fork": "the C library exports no syscall()"},
    )
    assert "syscall.fork: not available here (the C library exports no syscall())" in format_table(report)
    assert report.ok is True
    assert "unavailable" not in report.as_dict()  # the JSON keys stay as documented
