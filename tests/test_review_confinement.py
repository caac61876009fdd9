"""Review: what real confinement (tests/confine.py) still gets past the backend checks.

With /proc hidden the only confinement check left is ``prctl(PR_GET_SECCOMP)``,
and a filter can answer that call "success" too: it then reads as "no seccomp",
and a positive fork-probe verdict cached by an unconfined run is trusted under a
filter that fakes MADV_WIPEONFORK. The flag page then never resets, so no fork is
detected on any route, ``os.fork()`` included, although its at-fork hook runs.

In an isolated subinterpreter on 3.12 the probe path imports ``hashlib``, which
corrupts the heap there on some 3.12 releases: the process aborts at exit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from confine import FAKE_WIPEONFORK, run_confined

from support import case_result, case_script, run_python

pytestmark = pytest.mark.linux

#: prctl(PR_GET_SECCOMP) answers 0 ("not confined") without asking the kernel.
FAKE_GET_SECCOMP = "prctl:0=21=errno:0"

BODY = """
out["selection"] = selection()
out["children"] = children([filled(32), filled(8192)])
"""


def _run(cache: Path, rules: tuple[str, ...] = ()) -> Any:
    env = {"INHERIT_BACKEND": "", "XDG_CACHE_HOME": str(cache)}
    return case_result(run_confined(case_script(BODY), rules=rules, hide_proc=True, env=env, timeout=120))


@pytest.fixture
def trusted_cache(tmp_path: Path) -> Path:
    """A verdict cache holding the positive verdict of an unconfined run with /proc hidden."""
    cache = tmp_path / "cache"
    free = _run(cache)
    assert free["selection"]["backend"] == "madvise", free["selection"]
    assert free["selection"]["cache"], "the unconfined verdict was not cached: nothing to test"
    return cache


@pytest.mark.xfail(
    strict=True,
    reason="a faked prctl(PR_GET_SECCOMP) reads as 'no seccomp', so the cached positive verdict "
    "is trusted under a filter that fakes MADV_WIPEONFORK",
)
def test_a_faked_seccomp_query_does_not_let_a_cached_verdict_in(trusted_cache: Path) -> None:
    faked = _run(trusted_cache, rules=(FAKE_WIPEONFORK, FAKE_GET_SECCOMP))
    stale = {route: kid for route, kid in faked["children"].items() if kid.get("stale") or "error" in kid}
    assert not stale, f"children read the parent's bytes under {faked['selection']}: {stale}"
    assert faked["selection"]["backend"] == "getpid", faked["selection"]


@pytest.mark.xfail(
    strict=True,
    reason="with a kernel backend the os.fork() child hook only re-reads the flag, which a "
    "fooled verification leaves set: the child is not seen as a new process",
)
def test_an_os_fork_child_is_a_new_process_even_if_the_flag_page_was_not_wiped(trusted_cache: Path) -> None:
    """docs/architecture.md: a new process is detected when the flag reads zero, the PID
    changed, *or os.fork()'s child hook runs (both backends)*. The hook is the one signal that
    cannot be faked; it must count even when the kernel left the flag set."""
    faked = _run(trusted_cache, rules=(FAKE_WIPEONFORK, FAKE_GET_SECCOMP))
    assert faked["children"]["os.fork"].get("gen_moved"), faked["children"]["os.fork"]


SUBINTERPRETER_HOST = r"""
import json, os, sys
try:
    import _interpreters  # 3.13
    interp = _interpreters.create("isolated")
    run = lambda code: _interpreters.exec(interp, code)
except ImportError:
    import _xxsubinterpreters  # 3.12
    interp = _xxsubinterpreters.create(isolated=True)
    run = lambda code: _xxsubinterpreters.run_string(interp, code)
read_end, write_end = os.pipe()
failure = run(CODE.replace("WRITE_END", str(write_end)))
os.close(write_end)
print("RESULT " + os.read(read_end, 1 << 16).decode())
print("FAILURE " + repr(failure))
"""

SUBINTERPRETER_CODE = r"""
import json, os
import inherit
region = inherit.zero_on_fork(32)
report = {"backend": inherit.backend(), "verification": inherit.diagnostics()["verification"]}
os.write(WRITE_END, json.dumps(report).encode())
region.close()
"""


def _hashlib_breaks_subinterpreters() -> bool:
    proc = run_python(SUBINTERPRETER_HOST.replace("CODE", repr("import hashlib")), timeout=60)
    return proc.returncode != 0


@pytest.mark.skipif(sys.version_info < (3, 12), reason="isolated subinterpreters need 3.12+")
@pytest.mark.xfail(
    (3, 12) <= sys.version_info < (3, 13),
    strict=True,
    reason="the probe path imports hashlib (cache_key), which aborts the process at exit in an "
    "isolated subinterpreter on 3.12",
)
def test_the_probe_path_in_a_subinterpreter_does_not_abort_the_process(tmp_path: Path) -> None:
    if not _hashlib_breaks_subinterpreters():
        pytest.skip("hashlib works in isolated subinterpreters on this Python: nothing to show")
    code = SUBINTERPRETER_HOST.replace("CODE", repr(SUBINTERPRETER_CODE))
    proc = run_confined(code, hide_proc=True, env={"INHERIT_BACKEND": "", "XDG_CACHE_HOME": str(tmp_path)})
    assert "fork probe" in proc.stdout, f"the probe path was not taken: {proc.stdout} {proc.stderr[-500:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1000:]}"
