"""Wiping a large region drops its pages instead of writing zeros over every one.

A region's untouched pages cost nothing until written. Writing zeros over the
whole mapping at ``close()`` (or in the getpid backend's wipe in a new process)
would make a 256 MiB region of which one page was used grow the parent's RSS by
256 MiB, and every forked child's on its first library call (copy-on-write). Under a
cgroup memory limit (containers, and gVisor, where
the getpid backend is what runs) that is an OOM kill. ``MADV_DONTNEED`` (or a
fresh ``MAP_FIXED`` mapping) gives zero pages back without touching them.
Memory figures come from /proc/self/status; nothing here is timed.
"""

from __future__ import annotations

import pytest

from support import run_case

pytestmark = pytest.mark.linux

SIZE_MIB = 256
LIMIT_MIB = 64  # far above what one used page and the interpreter's own growth can cost

CASE = r"""
SIZE = SIZE_MIB << 20

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024

big = inherit.zero_on_fork(SIZE)
big[:16] = b"k" * 16  # one page in use
inherit.generation()

def first_call_in_child():
    before = status("VmRSS")
    inherit.generation()
    return status("VmRSS") - before

out["child_growth"] = {route: run_in_child(first_call_in_child, route=route, timeout=60)
                       for route in ("libc.fork", "syscall.clone") if route in ROUTES}
peak = status("VmHWM")
big.close()
out["close_growth"] = status("VmHWM") - peak
"""


@pytest.mark.parametrize("backend", ["", "getpid"], ids=["default-backend", "getpid-backend"])
def test_wiping_a_mostly_untouched_region_does_not_touch_every_page(backend: str) -> None:
    out = run_case(CASE.replace("SIZE_MIB", str(SIZE_MIB)), env={"INHERIT_BACKEND": backend}, timeout=180)
    assert out["child_growth"], "no child was forked"
    grown = {where: mib for where, mib in out["child_growth"].items() if mib > LIMIT_MIB}
    assert not grown, f"a child's RSS grew by {grown} MiB on its first call ({SIZE_MIB} MiB region)"
    assert out["close_growth"] <= LIMIT_MIB, f"close() raised peak RSS by {out['close_growth']} MiB"
