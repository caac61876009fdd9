"""Real kernel confinement: seccomp filters and a hidden /proc, applied by tests/confine.py.

A filter can refuse a call (an errno), answer "success" for a call it dropped
(errno 0), or kill the process on an argument it does not know. /proc can be
hidden under a tmpfs. The library must choose a backend that really works under
each, never trust a verdict recorded under other confinement, never claim a
protection the kernel did not apply, and never send a call that such a policy
kills for from the caller's process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confine import FAKE_DONTDUMP, FAKE_WIPEONFORK, KILL_UNKNOWN_ADVICE, REFUSE_WIPEONFORK, run_confined

from support import assert_children_clean, case_result, case_script

pytestmark = pytest.mark.linux

BODY = """
out["selection"] = selection()
status = "/proc/self/status"
out["seccomp"] = open(status).read().split("Seccomp:")[1].split()[0] if os.path.exists(status) else None
regions = [filled(32), filled(8192)]
out["children"] = children(regions)
out["intact"] = intact(regions)
secret = filled(32, secret=True)
out["secret"] = {"dumpable": secret.dumpable, "locked": secret.locked}
"""


def _run(tmp_path: Path, *, rules: tuple[str, ...] = (), hide_proc: bool = False, backend: str = "") -> Any:
    env = {"INHERIT_BACKEND": backend, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return case_result(
        run_confined(case_script(BODY), rules=rules, hide_proc=hide_proc, env=env, timeout=120)
    )


def test_a_cached_verdict_does_not_cross_into_a_seccomp_filter(tmp_path: Path) -> None:
    """One cache, /proc hidden: nothing says whether a filter could fake the probe, so a positive
    verdict is never cached there; under a filter that fakes MADV_WIPEONFORK the probe says no."""
    for _ in range(2):
        free = _run(tmp_path, hide_proc=True)
        assert free["selection"]["backend"] == "madvise", free["selection"]
        assert free["selection"]["verification"] == "fork probe", free["selection"]
        assert free["selection"]["cache"] is None, "a positive verdict was cached without /proc"
    assert not list(tmp_path.rglob("verdict-*.json"))

    faked = _run(tmp_path, hide_proc=True, rules=(FAKE_WIPEONFORK,))
    assert faked["selection"]["backend"] == "getpid", faked["selection"]
    assert "still read the parent's bytes" in faked["selection"]["refused"]["madvise"], faked["selection"]
    assert_children_clean(faked["children"])
    assert faked["intact"]
    twice = _run(tmp_path, hide_proc=True, rules=(FAKE_WIPEONFORK,))
    assert twice["selection"]["backend"] == "getpid", twice["selection"]


def test_a_faked_wipeonfork_is_caught_by_smaps(tmp_path: Path) -> None:
    result = _run(tmp_path, rules=(FAKE_WIPEONFORK,))
    assert result["seccomp"] == "2"
    assert result["selection"]["backend"] == "getpid", result["selection"]
    why = result["selection"]["refused"]["madvise"]
    assert "'wf'" in why and "parent's bytes" in why, why
    assert_children_clean(result["children"])


def test_a_refused_wipeonfork_falls_back_with_the_reason(tmp_path: Path) -> None:
    result = _run(tmp_path, rules=(REFUSE_WIPEONFORK,))
    assert result["selection"]["backend"] == "getpid", result["selection"]
    assert "EPERM" in result["selection"]["refused"]["madvise"]
    assert_children_clean(result["children"])


def test_requested_madvise_under_a_faking_filter_is_unavailable(tmp_path: Path) -> None:
    code = case_script(
        """
try:
    inherit.zero_on_fork(8)
except inherit.BackendUnavailable as exc:
    out["error"] = str(exc)
"""
    )
    env = {"INHERIT_BACKEND": "madvise", "XDG_CACHE_HOME": str(tmp_path)}
    result = case_result(run_confined(code, rules=(FAKE_WIPEONFORK,), env=env))
    assert "madvise" in result["error"], result


def test_dumpable_is_read_back_not_trusted_to_a_return_code(tmp_path: Path) -> None:
    """A filter answers "success" to MADV_DONTDUMP without applying it: the secret is in a core
    dump, so the region must not claim otherwise."""
    faked = _run(tmp_path, rules=(FAKE_DONTDUMP,))
    assert faked["selection"]["backend"] == "madvise"
    assert faked["secret"]["dumpable"] is True, faked["secret"]
    honest = _run(tmp_path)
    assert honest["secret"]["dumpable"] is False, honest["secret"]


def test_locked_is_read_back_not_trusted_to_a_return_code(tmp_path: Path) -> None:
    result = _run(tmp_path, rules=("mlock=errno:0", "mlock2=errno:0"))
    assert result["secret"]["locked"] is False, result["secret"]


def test_no_invalid_advice_is_ever_sent_from_the_callers_process(tmp_path: Path) -> None:
    """A policy that kills on unknown madvise advice: the library works and the process lives."""
    result = _run(tmp_path, rules=(KILL_UNKNOWN_ADVICE,))
    assert result["selection"]["backend"] == "madvise", result["selection"]
    assert_children_clean(result["children"])
    assert result["secret"]["dumpable"] is False


def test_the_probe_helper_takes_the_risk_of_invalid_advice(tmp_path: Path) -> None:
    """Without /proc the probe runs in a helper; under a kill-on-unknown-advice policy the helper
    dies (SIGSYS) instead of the caller, which falls back and says why."""
    result = _run(tmp_path, rules=(KILL_UNKNOWN_ADVICE,), hide_proc=True)
    assert result["selection"]["backend"] == "getpid", result["selection"]
    assert "SIGSYS" in result["selection"]["refused"]["madvise"], result["selection"]
    assert_children_clean(result["children"])
    verdicts = list((tmp_path / "cache").rglob("verdict-*.json"))
    assert not [json.loads(v.read_text()) for v in verdicts if not json.loads(v.read_text())["ok"]], (
        "a transient failure was cached as a verdict"
    )
