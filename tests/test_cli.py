"""``python -m inherit``: the report, ``--json``, and the live ``check``, run as a user would."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import inherit
from faultshim import fault_env
from inherit._diagnostics import KEYS
from inherit.testing import available_routes

# The JSON keys are an interface: scripts read them. Changing this list is a decision.
STABLE_REPORT_KEYS = {
    "inherit",
    "python",
    "implementation",
    "executable",
    "platform",
    "system",
    "release",
    "os_version",
    "machine",
    "candidates",
    "requested",
    "backend",
    "kernel_wipes",
    "reason",
    "refused",
    "verdicts",
    "verification",
    "verification_detail",
    "cache",
    "cache_dir",
    "accelerated",
    "accelerator",
    "restore_detection",
    "error",
}
STABLE_ROUTE_KEYS = {"route", "zeroed", "generation_moved", "parent_kept", "old_view_zeroed", "error", "ok"}
HOOKLESS_ROUTES = ("syscall.fork", "syscall.clone")  # no at-fork hook of any kind runs in these children


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m inherit ARGS`` in a fresh interpreter, outside the source tree.

    ``env`` entries are added to this process's environment; "" removes one. Output is plain:
    3.14's argparse colours help and usage when FORCE_COLOR is set, as CI sets it.
    """
    full_env = dict(os.environ)  # INHERIT_BACKEND included: tox -e getpid runs these against getpid
    full_env["PYTHON_COLORS"] = "0"
    for key, value in (env or {}).items():
        if value == "":
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run(
        [sys.executable, "-m", "inherit", *args],
        env=full_env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def run_json(*args: str, env: dict[str, str] | None = None, status: int = 0) -> Any:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == status, result.stdout + result.stderr
    return json.loads(result.stdout)


def table_rows(text: str) -> dict[str, list[str]]:
    """Rows of the check table, by route."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] in available_routes():
            rows[cells[0]] = cells[1:]
    return rows


# -- the report -------------------------------------------------------------------------------


def test_report_is_readable_and_exits_0() -> None:
    result = run_cli()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"backend {inherit.backend()}" in out.splitlines()[0]
    for heading in ("Backend", "Candidates (best first)", "Platform"):
        assert heading in out.splitlines()
    assert platform.release() in out
    assert platform.machine() in out
    assert platform.python_version() in out
    assert "chosen:" in out
    assert f"pyinherit {inherit.__version__} (pip install pyinherit)" in out  # the name to install
    assert result.stderr == ""


def test_report_json_has_stable_keys() -> None:
    data = run_json()
    assert set(data) == STABLE_REPORT_KEYS == set(KEYS)
    assert data["backend"] == inherit.backend()
    assert data["error"] is None
    assert data["requested"] == (os.environ.get("INHERIT_BACKEND", "").strip() or None)
    assert data["inherit"] == inherit.__version__
    assert data["python"] == platform.python_version()
    assert data["release"] == platform.release()
    assert data["machine"] == platform.machine()
    assert data["platform"] == sys.platform
    assert data["backend"] in data["candidates"]
    assert isinstance(data["kernel_wipes"], bool)
    assert data["reason"] and data["verification"]
    chosen = [v for v in data["verdicts"] if v["outcome"] == "chosen"]
    assert [v["backend"] for v in chosen] == [data["backend"]]
    for verdict in data["verdicts"]:
        assert set(verdict) == {"backend", "outcome", "detail"}
        assert verdict["outcome"] in ("chosen", "refused", "not tried")


def test_diagnostics_api_has_the_same_keys() -> None:
    assert list(inherit.diagnostics()) == list(KEYS)


def test_requested_backend_is_reported() -> None:
    data = run_json(env={"INHERIT_BACKEND": "getpid"})
    assert data["backend"] == "getpid"
    assert data["requested"] == "getpid"
    assert data["kernel_wipes"] is False
    assert "INHERIT_BACKEND" in data["reason"]


def test_bogus_backend_is_an_error_on_stderr() -> None:
    result = run_cli(env={"INHERIT_BACKEND": "bogus"})
    assert result.returncode == 1
    message = "INHERIT_BACKEND='bogus' is not a backend"
    assert result.stderr.startswith(f"python -m inherit: error: {message}")
    assert message not in result.stdout
    assert "no usable backend" in result.stdout.splitlines()[0]
    assert "Platform" in result.stdout.splitlines()  # the rest of the report is still there
    assert "Traceback" not in result.stdout + result.stderr
    # JSON stays parseable on stdout, with the message in "error"; stderr says it too.
    json_result = run_cli("--json", env={"INHERIT_BACKEND": "bogus"})
    assert json_result.returncode == 1
    data = json.loads(json_result.stdout)
    assert set(data) == STABLE_REPORT_KEYS
    assert data["backend"] is None
    assert data["requested"] == "bogus"
    assert message in data["error"]
    assert message in json_result.stderr


@pytest.mark.linux
def test_refused_madvise_falls_back_and_says_why() -> None:
    data = run_json(env={**fault_env(madvise="EPERM"), "INHERIT_BACKEND": ""})
    assert data["backend"] == "getpid"
    assert "EPERM" in data["refused"]["madvise"]
    assert [(v["backend"], v["outcome"]) for v in data["verdicts"]] == [
        ("madvise", "refused"),
        ("getpid", "chosen"),
    ]


@pytest.mark.linux
def test_requested_but_unavailable_backend_exits_1() -> None:
    env = {**fault_env(madvise="EINVAL"), "INHERIT_BACKEND": "madvise"}
    result = run_cli(env=env)
    assert result.returncode == 1
    assert "backend 'madvise' is unavailable" in result.stderr
    assert "backend 'madvise' is unavailable" not in result.stdout
    data = run_json(env=env, status=1)
    assert "EINVAL" in data["refused"]["madvise"]
    assert data["verdicts"] == [
        {"backend": "madvise", "outcome": "refused", "detail": data["refused"]["madvise"]}
    ]


@pytest.mark.linux
def test_cached_fork_probe_shows_the_cache_location(tmp_path: Path) -> None:
    """Without smaps the madvise backend is verified by a fork probe whose verdict is cached."""
    env = {
        **fault_env(proc="ENOENT", proc_only="smaps"),
        "XDG_CACHE_HOME": str(tmp_path),
        "INHERIT_BACKEND": "",
    }
    first = run_json(env=env)
    assert first["backend"] == "madvise"
    assert first["verification"] == "fork probe"
    assert first["cache"] is not None and Path(first["cache"]).is_file()
    assert first["cache_dir"] == str(tmp_path / "inherit")
    assert Path(first["cache"]).parent == tmp_path / "inherit"
    second = run_json(env=env)
    assert second["verification"].startswith("fork probe (cached")
    assert second["cache"] == first["cache"]
    text = run_cli(env=env).stdout
    assert first["cache"] in text


# -- check ------------------------------------------------------------------------------------


def test_check_passes_over_every_route() -> None:
    result = run_cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == available_routes()
    for route, cells in rows.items():
        zeroed, moved, kept = cells[0], cells[1], cells[2]
        assert (zeroed, moved, kept) == ("yes", "yes", "yes"), route
    assert "route" in result.stdout and "zeroed" in result.stdout and "generation moved" in result.stdout
    assert "ok:" in result.stdout


def test_check_json() -> None:
    data = run_json("check")
    assert set(data) == {"backend", "kernel_wipes", "ok", "error", "routes"}
    assert data["ok"] is True
    assert data["error"] is None
    assert data["backend"] == inherit.backend()
    assert [r["route"] for r in data["routes"]] == available_routes()
    for row in data["routes"]:
        assert set(row) == STABLE_ROUTE_KEYS
        assert row["zeroed"] is True and row["generation_moved"] is True and row["parent_kept"] is True
        assert row["ok"] is True and row["error"] is None


def test_top_level_json_flag_applies_to_check() -> None:
    result = run_cli("--json", "check", "--route", "os.fork")
    assert result.returncode == 0, result.stderr
    assert [r["route"] for r in json.loads(result.stdout)["routes"]] == ["os.fork"]


def test_check_one_route() -> None:
    result = run_cli("check", "--route", "libc.fork")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(table_rows(result.stdout)) == ["libc.fork"]


def test_check_with_getpid_backend_still_zeroes_through_the_api() -> None:
    """The getpid backend wipes on the first access through the Region API, whatever the route."""
    env = {"INHERIT_BACKEND": "getpid"}
    result = run_cli("check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == available_routes()
    assert all(cells[:3] == ["yes", "yes", "yes"] for cells in rows.values())
    data = run_json("check", env=env)
    assert data["backend"] == "getpid" and data["kernel_wipes"] is False and data["ok"] is True
    by_route = {r["route"]: r for r in data["routes"]}
    # The documented blind spot, shown as information: an old memoryview in a child that no hook saw.
    assert by_route["os.fork"]["old_view_zeroed"] is True
    for route in HOOKLESS_ROUTES:
        if route in by_route:
            assert by_route[route]["old_view_zeroed"] is False
            assert "note:" in result.stdout


@pytest.mark.linux
def test_check_under_fallback_still_passes() -> None:
    data = run_json("check", env={**fault_env(madvise="IGNORE_WIPE"), "INHERIT_BACKEND": ""})
    assert data["backend"] == "getpid"
    assert data["ok"] is True


def test_check_with_bogus_backend_fails_with_the_message_on_stderr() -> None:
    result = run_cli("check", env={"INHERIT_BACKEND": "bogus"})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("python -m inherit check: error: cannot run: INHERIT_BACKEND='bogus'")
    data = run_json("check", env={"INHERIT_BACKEND": "bogus"}, status=1)
    assert data["ok"] is False and data["routes"] == [] and "bogus" in data["error"]


# -- arguments --------------------------------------------------------------------------------


def test_help() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--json" in result.stdout and "check" in result.stdout and "INHERIT_BACKEND" in result.stdout
    assert "--version" in result.stdout and "pip install pyinherit" in result.stdout
    result = run_cli("check", "--help")
    assert result.returncode == 0
    assert "--route" in result.stdout and "--timeout" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--bogus",),
        ("frobnicate",),
        ("check", "--timeout", "0"),
        ("check", "--timeout", "soon"),
        ("check", "--route", "vfork"),
    ],
)
def test_bad_arguments_exit_2(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "python -m inherit" in result.stderr


def test_usage_shows_the_command_is_optional() -> None:
    usage = run_cli("--help").stdout.splitlines()[0]
    assert usage.startswith("usage: python -m inherit [-h] [--version] [--json] [check")
    assert "COMMAND ..." not in usage
    result = run_cli("frobnicate")
    assert result.stderr.splitlines()[0] == usage  # argparse repeats it with an error


def test_version_matches_the_installed_distribution() -> None:
    try:
        installed = importlib.metadata.version("pyinherit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("inherit is not installed as the pyinherit distribution here")
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pyinherit {installed}\n"
    assert installed == inherit.__version__
    assert result.stderr == ""


@pytest.mark.parametrize("args", [["--json"], [], ["check", "--route", "os.fork"]])
def test_a_reader_that_goes_away_gets_no_traceback(args: list[str]) -> None:
    """``python -m inherit | head -1``: the pipe closes early; the command stops quietly."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    env = dict(os.environ, PYTHON_COLORS="0")
    proc = subprocess.run(
        [sys.executable, "-m", "inherit", *args],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
        timeout=120,
    )
    os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
