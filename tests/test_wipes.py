"""Wiping needs no memory in proportion to the region, and finalizers work at shutdown.

A finalizer that needs a copy the size of its region fails under an
address-space limit and leaves the mapping, with the secret, in place. And at
interpreter shutdown module globals are gone, so a finalizer that looks them
up raises (``'NoneType' object is not callable``) instead of wiping.
"""

from __future__ import annotations

import json

import pytest

from support import run_python

pytestmark = pytest.mark.linux

LIMITED = r"""
import gc, json, re, resource, sys
import inherit

def vm_size():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmSize:\s+(\d+) kB", f.read()).group(1)) * 1024

SIZE = 256 * 2**20
out = {}
for how in ("drop", "close", "wipe"):
    region = inherit.zero_on_fork(SIZE, secret=HOW_SECRET)
    with region.view() as view:  # touch every page: no copy of the pattern in Python
        for start in range(0, SIZE, 4096):
            view[start] = 0x5A
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 4 * 2**20, resource.RLIM_INFINITY))
    before = vm_size()
    errors = []
    sys.unraisablehook = lambda args: errors.append(repr(args.exc_value))
    try:
        if how == "drop":
            del region
            gc.collect()
        elif how == "close":
            region.close()
        else:
            region.wipe()
            out["wiped_zero"] = not any(region[i] for i in range(0, SIZE, 4096 * 64))
    except BaseException as exc:
        errors.append(repr(exc))
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    out[how] = {"errors": errors, "freed": before - vm_size()}
    if how == "wipe":
        region.close()
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("secret", [False, True], ids=["plain", "secret"])
def test_wiping_a_large_region_needs_no_memory(secret: bool) -> None:
    proc = run_python(LIMITED.replace("HOW_SECRET", str(secret)), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for how in ("drop", "close", "wipe"):
        assert out[how]["errors"] == [], (how, out[how])
    assert out["drop"]["freed"] >= 256 * 2**20, "the finalizer left the mapping (and its bytes) in place"
    assert out["close"]["freed"] >= 256 * 2**20
    assert out["wiped_zero"] is True


SHUTDOWN = r"""
import os, sys
import inherit

# Regions the interpreter finalizes at exit, after module globals are cleared: in
# module globals, in a cycle, in a ForkLocal, with a view alive, large and small.
plain = inherit.zero_on_fork(32)
plain[:] = b"x" * 32
big = inherit.zero_on_fork(100000, secret=True)
cycle = [inherit.zero_on_fork(64)]
cycle.append(cycle)

class Holder(inherit.ForkLocal):
    def __init__(self):
        self.key = inherit.zero_on_fork(16)

holder = Holder()
pinned = inherit.zero_on_fork(48)
view = pinned.view()
# sys is finalized after every other module: these die with the library's globals gone.
late = inherit.zero_on_fork(24)
late[:] = b"l" * 24
sys._inherit_test_late = [late, inherit.zero_on_fork(5000), late.view()]
if sys.argv[1] == "child":
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        sys.exit(0)
    holder.key  # renewed in the child, which then exits normally
sys.exit(0)
"""


@pytest.mark.parametrize("where", ["parent", "child"])
def test_finalizers_at_interpreter_shutdown_are_silent(where: str) -> None:
    proc = run_python(SHUTDOWN, args=[where])
    assert proc.returncode == 0, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
