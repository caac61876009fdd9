"""The fork probe can never recurse into itself.

A fork hook once selected a backend, which (with /proc hidden) ran the fork
probe, whose helper forked, which ran the hook again: a fork bomb. These
tests pin both guards.
"""

from __future__ import annotations

import json

import pytest

from faultshim import fault_env
from support import run_python

pytestmark = pytest.mark.linux


def test_os_fork_before_any_use_selects_nothing(tmp_path: object) -> None:
    """os.fork()'s hooks must not choose a backend (choosing may start a probe)."""
    code = """
    import json, os, sys
    started = []
    sys.addaudithook(lambda event, args: started.append(event) if event == "subprocess.Popen" else None)
    import inherit
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print(json.dumps({"selected": inherit._runtime._selection is not None, "subprocesses": len(started)}))
    """
    out = run_python(code, env={**fault_env(proc="ENOENT"), "XDG_CACHE_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"selected": False, "subprocesses": 0}


def test_probe_refuses_inside_a_probe_helper(tmp_path: object) -> None:
    code = """
    import json
    from inherit.backends._probe import fork_probe
    ok, verification = fork_probe("madvise")
    print(json.dumps([ok, verification.detail]))
    """
    env = {"_INHERIT_PROBE_HELPER": "1", "XDG_CACHE_HOME": str(tmp_path)}
    out = run_python(code, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [False, "refused inside a probe helper"]
