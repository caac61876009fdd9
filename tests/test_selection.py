"""Backend selection is verified, not assumed: each case runs in a fresh interpreter.

An LD_PRELOAD shim (tests/faultshim.py) makes libc's madvise() refuse or silently ignore
MADV_WIPEONFORK, or hides /proc; the library's real code paths then run, and real forks
show whether children still read zeros. Every subprocess gets its own XDG_CACHE_HOME so
no verdict leaks between cases or into the user's cache.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from faultshim import fault_env
from support import run_python

LINUX = sys.platform.startswith("linux")

# Prints one JSON line: the backend (or the error selecting it), diagnostics, and with
# --fork what children made by os.fork and by fork() from C read from filled regions.
SCRIPT = r"""
import json, sys

import inherit

out = {}
try:
    out["backend"] = inherit.backend()
except Exception as exc:
    out["error_type"] = type(exc).__name__
    out["error"] = str(exc)
    out["reason"] = getattr(exc, "reason", None)
    try:
        inherit.zero_on_fork(8)
    except Exception as again:
        out["zero_on_fork_error"] = type(again).__name__
    else:
        out["zero_on_fork_error"] = None
    print(json.dumps(out))
    sys.exit(0)
out["diagnostics"] = inherit.diagnostics()
if "--fork" in sys.argv:
    from inherit.testing import run_in_child

    small = inherit.zero_on_fork(32)
    small[:] = b"\x5a" * 32
    large = inherit.zero_on_fork(10000)
    large[:] = b"\xa5" * 10000
    out["children"] = {
        route: [
            run_in_child(bytes, small, route=route).hex(),
            run_in_child(bytes, large, route=route).count(0),
        ]
        for route in ("os.fork", "libc.fork")
    }
    out["parent"] = [bytes(small).hex(), bytes(large).count(0xA5)]
print(json.dumps(out, default=str))
"""

REFUSALS = [
    ("EPERM", "EPERM"),
    ("EINVAL", "EINVAL"),
    ("ENOSYS", "ENOSYS"),
    ("ENOMEM", "ENOMEM"),
    ("IGNORE", "invalid advice"),  # accepts anything, even nonsense advice (old qemu-user)
    ("IGNORE_WIPE", "smaps"),  # accepts WIPEONFORK but nothing happens
]


def _run(env: dict[str, str], *args: str, code: str = SCRIPT) -> dict[str, Any]:
    proc = run_python(code, env=env, args=list(args))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _env(tmp_path: Path, backend: str = "", **faults: str) -> dict[str, str]:
    """Environment for one case: faults (if any), the requested backend ("" = none), a private cache."""
    env = fault_env(**faults) if faults else {}
    env["INHERIT_BACKEND"] = backend
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


def _assert_children_read_zeros(result: dict[str, Any]) -> None:
    for route, (small, large_zeros) in result["children"].items():
        assert small == "00" * 32, route
        assert large_zeros == 10000, route
    assert result["parent"] == ["5a" * 32, 10000]


# -- refused or ignored madvise --------------------------------------------------------------------


@pytest.mark.linux
@pytest.mark.parametrize("mode,why", REFUSALS, ids=[m for m, _ in REFUSALS])
def test_refused_madvise_falls_back_to_getpid(tmp_path: Path, mode: str, why: str) -> None:
    result = _run(_env(tmp_path, madvise=mode), "--fork")
    assert result.get("backend") == "getpid", result
    diagnostics = result["diagnostics"]
    assert why in diagnostics["refused"]["madvise"]
    assert diagnostics["reason"].startswith("fallback")
    assert diagnostics["kernel_wipes"] is False
    _assert_children_read_zeros(result)


@pytest.mark.linux
@pytest.mark.parametrize("mode,why", REFUSALS, ids=[m for m, _ in REFUSALS])
def test_requested_madvise_that_fails_is_unavailable(tmp_path: Path, mode: str, why: str) -> None:
    """No silent fallback when a backend was asked for by name."""
    result = _run(_env(tmp_path, "madvise", madvise=mode))
    assert result.get("error_type") == "BackendUnavailable", result
    assert "madvise" in result["error"]
    assert why in result["reason"]
    assert result["zero_on_fork_error"] == "BackendUnavailable"  # nothing is handed out either


@pytest.mark.linux
def test_refusal_after_verification_falls_back_cleanly(tmp_path: Path) -> None:
    """madvise verified once, then refused for the fork-detection page.

    Selection must still end with a verified backend (or BackendUnavailable), never leak a
    raw OSError out of ``inherit.backend()``.
    """
    result = _run(_env(tmp_path, madvise="EPERM", madvise_after="1"), "--fork")
    assert "error_type" not in result, result
    assert result["backend"] == "getpid"
    assert "EPERM" in result["diagnostics"]["refused"]["madvise"]
    _assert_children_read_zeros(result)


LATE_REFUSAL = r"""
import json
import inherit

backend = inherit.backend()
outcome = {}
for size in (32, 10000):
    try:
        r = inherit.zero_on_fork(size)
    except (OSError, MemoryError) as exc:
        outcome[size] = type(exc).__name__
    else:
        from inherit.testing import run_in_child

        r[:] = b"\x01" * size
        outcome[size] = "zeros" if run_in_child(bytes, r, route="libc.fork") == bytes(size) else "LEAKED"
print(json.dumps({"backend": backend, "outcome": outcome}))
"""


@pytest.mark.linux
def test_late_refusal_never_hands_out_unmarked_memory(tmp_path: Path) -> None:
    """Verification and the flag page succeed, then marking new arenas fails: raise, never leak."""
    result = _run(_env(tmp_path, madvise="EPERM", madvise_after="2"), code=LATE_REFUSAL)
    assert result["backend"] == "madvise"
    assert "LEAKED" not in result["outcome"].values(), result


# -- INHERIT_BACKEND ---------------------------------------------------------------------------------


def test_unknown_backend_is_valueerror_naming_the_variable(tmp_path: Path) -> None:
    result = _run(_env(tmp_path, "bogus"))
    assert result["error_type"] == "ValueError"
    assert "INHERIT_BACKEND" in result["error"]
    assert "bogus" in result["error"]
    assert result["zero_on_fork_error"] == "ValueError"


def test_requested_getpid(tmp_path: Path) -> None:
    result = _run(_env(tmp_path, "getpid"), "--fork")
    assert result["backend"] == "getpid"
    assert result["diagnostics"]["requested"] == "getpid"
    assert "INHERIT_BACKEND" in result["diagnostics"]["reason"]
    _assert_children_read_zeros(result)


@pytest.mark.linux
def test_requested_madvise_works_here(tmp_path: Path) -> None:
    result = _run(_env(tmp_path, "madvise"), "--fork")
    if result.get("error_type") == "BackendUnavailable":
        pytest.skip(f"madvise does not work on this machine: {result['reason']}")
    assert result["backend"] == "madvise"
    assert result["diagnostics"]["verification"] in ("smaps", "fork probe", "fork probe (cached)")
    _assert_children_read_zeros(result)


@pytest.mark.linux
def test_requested_minherit_on_linux_is_unavailable(tmp_path: Path) -> None:
    result = _run(_env(tmp_path, "minherit"))
    assert result.get("error_type") == "BackendUnavailable", result
    assert "minherit" in result["error"]
    assert result["zero_on_fork_error"] == "BackendUnavailable"


# -- import is cheap and inert ----------------------------------------------------------------------

IMPORT_ONLY = r"""
import json, sys

WATCHED = ("os.fork", "os.forkpty", "os.posix_spawn", "os.system", "os.exec", "os.spawn", "subprocess.Popen")
events = []
sys.addaudithook(lambda event, args: events.append(event) if event.startswith(WATCHED) else None)

import inherit
import inherit._detect
import inherit._select

out = {
    "import_events": list(events),
    "selected_at_import": inherit._select._current is not None,
    "installed_at_import": inherit._detect._installed,
}
try:
    out["backend"] = inherit.backend()
except Exception as exc:
    out["error_type"] = type(exc).__name__
out["events_after_use"] = list(events)
print(json.dumps(out))
"""


def test_import_selects_nothing_and_never_forks(tmp_path: Path) -> None:
    result = _run(_env(tmp_path, "bogus"), code=IMPORT_ONLY)
    assert result["import_events"] == []
    assert result["selected_at_import"] is False
    assert result["installed_at_import"] is False
    assert result["error_type"] == "ValueError"  # the bad name surfaces on first use, not at import


@pytest.mark.linux
def test_import_never_forks_even_where_selection_would(tmp_path: Path) -> None:
    """With /proc hidden, verification needs a probe process; it starts on first use only.

    The probe showing up after first use also proves the audit hook would have seen it.
    """
    result = _run(_env(tmp_path, proc="ENOENT"), code=IMPORT_ONLY)
    assert result["import_events"] == []
    assert result["selected_at_import"] is False
    assert "subprocess.Popen" in result["events_after_use"]  # the probe ran, on first use


# -- no /proc: a fork probe with a cached verdict ---------------------------------------------------


def _assert_probe_verified(result: dict[str, Any], method: str = "fork probe") -> None:
    """madvise was chosen on the strength of a fork probe (the message says why not, if not)."""
    diagnostics = result.get("diagnostics", {})
    assert result.get("backend") == "madvise", diagnostics.get("refused", result)
    assert diagnostics["verification"] == method


def _verdict_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").rglob("verdict-*.json"))


@pytest.mark.linux
@pytest.mark.parametrize("proc", ["ENOENT", "EACCES"])
def test_without_proc_a_fork_probe_verifies_and_is_cached(tmp_path: Path, proc: str) -> None:
    env = _env(tmp_path, proc=proc)
    first = _run(env, "--fork")
    _assert_probe_verified(first)
    cache = first["diagnostics"]["cache"]
    assert cache is not None and Path(cache).is_file()
    assert Path(cache).resolve().is_relative_to((tmp_path / "cache").resolve())
    assert json.loads(Path(cache).read_text())["ok"] is True
    _assert_children_read_zeros(first)

    second = _run(env)
    _assert_probe_verified(second, "fork probe (cached)")
    assert second["diagnostics"]["cache"] == cache


CORRUPTIONS = {
    "garbage": b"{this is not json",
    "binary": b"\xff\xfe\x00\x81",
    "list": b"[1, 2, 3]",
    "wrong-types": b'{"key": "KEY", "ok": "yes", "detail": 5}',
    "wrong-key": b'{"key": "someone-else", "ok": false, "detail": "from another environment"}',
}


@pytest.mark.linux
@pytest.mark.parametrize("content", CORRUPTIONS.values(), ids=list(CORRUPTIONS))
def test_corrupt_verdict_is_ignored_and_rewritten(tmp_path: Path, content: bytes) -> None:
    env = _env(tmp_path, proc="ENOENT")
    first = _run(env)
    _assert_probe_verified(first)
    (path,) = _verdict_files(tmp_path)
    key = json.loads(path.read_text())["key"]
    path.write_bytes(content.replace(b"KEY", key.encode()))

    again = _run(env)
    _assert_probe_verified(again)  # probed again, not trusted
    rewritten = json.loads(path.read_text())
    assert rewritten["ok"] is True and rewritten["key"] == key

    _assert_probe_verified(_run(env), "fork probe (cached)")


@pytest.mark.linux
def test_without_proc_an_ignored_madvise_is_caught_by_the_probe(tmp_path: Path) -> None:
    """No smaps to look at and madvise lies: only a real fork can tell, and it does."""
    env = _env(tmp_path, proc="ENOENT", madvise="IGNORE_WIPE")
    result = _run(env, "--fork")
    assert result.get("backend") == "getpid", result
    why = result["diagnostics"]["refused"]["madvise"]
    assert "smaps is unreadable" in why and "child" in why
    _assert_children_read_zeros(result)
    (path,) = _verdict_files(tmp_path)
    assert json.loads(path.read_text())["ok"] is False

    os.utime(path, ns=(0, 0))  # a fresh probe would replace the file
    cached = _run(env)
    assert cached["backend"] == "getpid"
    assert cached["diagnostics"]["refused"]["madvise"] == why
    assert path.stat().st_mtime_ns == 0  # the negative verdict was reused, not probed again


@pytest.mark.skipif(LINUX, reason="checks the fallback where madvise does not exist")
def test_non_linux_never_selects_madvise(tmp_path: Path) -> None:
    result = _run(_env(tmp_path))
    assert result["backend"] in ("minherit", "getpid")
