"""What real confinement (tests/confine.py) must not get past: faked answers and fooled checks.

With /proc hidden nothing says whether a seccomp filter is installed:
``prctl(PR_GET_SECCOMP)`` cannot stand in, because a filter can answer that call
"success" too and read as "no seccomp". So a positive fork-probe verdict is
never trusted there, even one already in the cache. And if a verification were
ever fooled, ``os.fork()``'s at-fork hook still makes its child a new process.

In an isolated subinterpreter on 3.12, importing ``hashlib`` corrupts the heap
on some releases (the process aborts at exit); the probe path must not need it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from confine import FAKE_WIPEONFORK, run_confined

from support import case_result, case_script, run_case, run_python

pytestmark = pytest.mark.linux

#: prctl(PR_GET_SECCOMP) answers 0 ("not confined") without asking the kernel.
FAKE_GET_SECCOMP = "prctl:0=21=errno:0"

BODY = """
out["selection"] = selection()
out["children"] = children([filled(32), filled(8192)])
"""

PLANT = r"""
import json, os, time
from inherit.backends import _probe
key = _probe.cache_key("madvise", "seccomp=unknown")  # what a process without /proc computes
path = _probe.cache_dir() / _probe.cache_file_name("madvise", key)
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps({"key": key, "ok": True, "detail": "planted", "time": time.time()}))
out["path"] = str(path)
"""


def _run(cache: Path, rules: tuple[str, ...] = ()) -> Any:
    env = {"INHERIT_BACKEND": "", "XDG_CACHE_HOME": str(cache)}
    return case_result(run_confined(case_script(BODY), rules=rules, hide_proc=True, env=env, timeout=120))


def test_a_cached_positive_verdict_is_not_trusted_without_proc(tmp_path: Path) -> None:
    """A positive verdict in the cache (planted, or left by an older version) under a filter that
    fakes MADV_WIPEONFORK and the seccomp query: the probe runs again and says no."""
    cache = tmp_path / "cache"
    planted = run_case(PLANT, env={"XDG_CACHE_HOME": str(cache)})
    assert Path(planted["path"]).is_file()
    faked = _run(cache, rules=(FAKE_WIPEONFORK, FAKE_GET_SECCOMP))
    stale = {route: kid for route, kid in faked["children"].items() if kid.get("stale") or "error" in kid}
    assert not stale, f"children read the parent's bytes under {faked['selection']}: {stale}"
    assert faked["selection"]["backend"] == "getpid", faked["selection"]
    assert "still read the parent's bytes" in faked["selection"]["refused"]["madvise"], faked["selection"]
    # The definite negative replaced the planted positive.
    assert json.loads(Path(planted["path"]).read_text())["ok"] is False


UNWIPED_FLAG = r"""
import ctypes
from inherit import _runtime
if inherit.backend() != "madvise":
    out["skip"] = f"needs the madvise backend, not {inherit.backend()}"
else:
    # What a fooled verification would leave: a flag page the kernel does not wipe.
    holder = ctypes.c_char.from_buffer(_runtime.flag)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.madvise(ctypes.addressof(holder), os.sysconf("SC_PAGE_SIZE"), 19) == 0  # KEEPONFORK

    class Conn(inherit.ForkLocal):
        def __init__(self):
            self.pid = os.getpid()

    conn = Conn()
    parent = inherit.generation()

    def child():
        return {"moved": inherit.generation() != parent, "renewed": conn.pid == os.getpid()}

    out["kids"] = {route: run_in_child(child, route=route, timeout=30)
                   for route in ("os.fork", "multiprocessing") if route in available_routes()}
    out["libc"] = run_in_child(child, route="libc.fork", timeout=30) if "libc.fork" in ROUTES else None
"""


def test_an_os_fork_child_is_a_new_process_even_if_the_flag_page_was_not_wiped() -> None:
    """docs/architecture.md: a new process is detected when the flag reads zero, the PID
    changed, *or os.fork()'s child hook runs*. The hook is the one signal that cannot be faked;
    it counts even when the kernel left the flag set."""
    out = run_case(UNWIPED_FLAG, env={"INHERIT_BACKEND": ""})
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["kids"], "no hooked route here"
    for route, kid in out["kids"].items():
        assert kid == {"moved": True, "renewed": True}, (route, kid)
    # Without a hook nothing can tell (the flag is all there is): this is why verification matters.
    if out["libc"] is not None:
        assert out["libc"] == {"moved": False, "renewed": False}, out["libc"]


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
def test_the_probe_path_in_a_subinterpreter_does_not_abort_the_process(tmp_path: Path) -> None:
    if not _hashlib_breaks_subinterpreters():
        pytest.skip("hashlib works in isolated subinterpreters on this Python: nothing to show")
    code = SUBINTERPRETER_HOST.replace("CODE", repr(SUBINTERPRETER_CODE))
    proc = run_confined(code, hide_proc=True, env={"INHERIT_BACKEND": "", "XDG_CACHE_HOME": str(tmp_path)})
    assert "fork probe" in proc.stdout, f"the probe path was not taken: {proc.stdout} {proc.stderr[-500:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1000:]}"
