"""Memoryviews the library hands out, exported in a garbage cycle, before CPython 3.12.7.

CPython before 3.12.7 crashes when its cyclic GC clears a memoryview that has
exports (gh-77894). A plain ``memoryview(bytearray)`` does that on these
versions; the views the library hands out (``Region.view()``, a direct
``Region.__buffer__`` call) are kept reachable while anything holds them, so a
consumer (``pickle.PickleBuffer``) that exports one and lands in a cycle with it
does not crash the process.
"""

from __future__ import annotations

import pytest

from support import run_python

CYCLE = r"""
import gc, pickle, sys
import inherit

region = inherit.zero_on_fork(64)
region[:] = b"S" * 64
made = getattr(region, sys.argv[1])
view = made(0) if sys.argv[1] == "__buffer__" else made()
consumer = pickle.PickleBuffer(view)  # exports the library's memoryview
cycle = [consumer, view]
cycle.append(cycle)
del view, consumer, cycle
gc.collect()
region.close()
print("survived")
"""


@pytest.mark.parametrize("how", ["__buffer__", "view"])
def test_a_handed_out_view_exported_in_a_garbage_cycle_does_not_crash(how: str) -> None:
    proc = run_python(CYCLE, args=[how], timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    assert "survived" in proc.stdout
