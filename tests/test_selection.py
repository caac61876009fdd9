"""Backend selection: INHERIT_BACKEND is honoured strictly, and import chooses nothing.

Each case runs in a fresh interpreter with its own XDG_CACHE_HOME, so no verdict
leaks between cases or into the user's cache. What happens when the kernel
refuses or fakes the mechanism is in test_faults.py (LD_PRELOAD shim) and
test_confinement.py (real seccomp filters, a hidden /proc).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from faultshim import fault_env
from support import assert_children_clean, run_case

LINUX = sys.platform.startswith("linux")

BODY = """
try:
    out["backend"] = inherit.backend()
except Exception as exc:
    out["error"] = describe(exc)
    out["reason"] = getattr(exc, "reason", None)
    try:
        inherit.zero_on_fork(8)
        out["zero_on_fork_error"] = None
    except Exception as again:
        out["zero_on_fork_error"] = type(again).__name__
else:
    out["selection"] = selection()
    out["requested"] = inherit.diagnostics()["requested"]
    out["children"] = children([filled(32), filled(10000)])
"""


def _run(tmp_path: Path, backend: str, **faults: str) -> dict[str, object]:
    env = fault_env(**faults) if faults else {}
    return run_case(BODY, {**env, "INHERIT_BACKEND": backend, "XDG_CACHE_HOME": str(tmp_path / "cache")})


def test_unknown_backend_is_valueerror_naming_the_variable(tmp_path: Path) -> None:
    result = _run(tmp_path, "bogus")
    error = result["error"]
    assert isinstance(error, dict) and error["type"] == "ValueError", result
    assert "INHERIT_BACKEND" in error["message"] and "bogus" in error["message"]
    assert result["zero_on_fork_error"] == "ValueError"


def test_requested_getpid(tmp_path: Path) -> None:
    result = _run(tmp_path, "getpid")
    assert result["backend"] == "getpid" and result["requested"] == "getpid"
    selection = result["selection"]
    assert isinstance(selection, dict) and "INHERIT_BACKEND" in selection["reason"]
    assert_children_clean(result["children"])  # type: ignore[arg-type]


@pytest.mark.linux
def test_requested_madvise_works_here(tmp_path: Path) -> None:
    result = _run(tmp_path, "madvise")
    if "error" in result:
        pytest.skip(f"madvise does not work on this machine: {result['reason']}")
    assert result["backend"] == "madvise"
    selection = result["selection"]
    assert isinstance(selection, dict) and selection["verification"] == "smaps", selection
    assert_children_clean(result["children"])  # type: ignore[arg-type]


@pytest.mark.linux
def test_requested_minherit_on_linux_is_unavailable(tmp_path: Path) -> None:
    result = _run(tmp_path, "minherit")
    error = result["error"]
    assert isinstance(error, dict) and error["type"] == "BackendUnavailable", result
    assert "minherit" in error["message"]
    assert result["zero_on_fork_error"] == "BackendUnavailable"


@pytest.mark.skipif(LINUX, reason="checks the fallback where madvise does not exist")
def test_non_linux_never_selects_madvise(tmp_path: Path) -> None:
    assert _run(tmp_path, "")["backend"] in ("minherit", "getpid")


# -- import is cheap and inert ----------------------------------------------------------------------

IMPORT_ONLY = r"""
import json, sys

WATCHED = ("os.fork", "os.forkpty", "os.posix_spawn", "os.system", "os.exec", "os.spawn", "subprocess.Popen")
events = []
sys.addaudithook(lambda event, args: events.append(event) if event.startswith(WATCHED) else None)

import inherit
import inherit._runtime

out = {
    "import_events": list(events),
    "selected_at_import": inherit._runtime._selection is not None,
    "installed_at_import": inherit._runtime.installed,
}
try:
    out["backend"] = inherit.backend()
except Exception as exc:
    out["error_type"] = type(exc).__name__
out["events_after_use"] = list(events)
print("RESULT " + json.dumps(out))
"""


def _import_only(env: dict[str, str]) -> dict[str, object]:
    from support import case_result, run_python

    return case_result(run_python(IMPORT_ONLY, env=env))


def test_import_selects_nothing_and_never_forks(tmp_path: Path) -> None:
    result = _import_only({"INHERIT_BACKEND": "bogus", "XDG_CACHE_HOME": str(tmp_path)})
    assert result["import_events"] == []
    assert result["selected_at_import"] is False
    assert result["installed_at_import"] is False
    assert result["error_type"] == "ValueError"  # the bad name surfaces on first use, not at import


@pytest.mark.linux
def test_import_never_forks_even_where_selection_would(tmp_path: Path) -> None:
    """With /proc hidden, verification needs a probe process; it starts on first use only.

    The probe showing up after first use also proves the audit hook would have seen it.
    """
    result = _import_only(
        {**fault_env(proc="ENOENT"), "INHERIT_BACKEND": "", "XDG_CACHE_HOME": str(tmp_path)}
    )
    assert result["import_events"] == []
    assert result["selected_at_import"] is False
    assert "subprocess.Popen" in result["events_after_use"]  # type: ignore[operator]
