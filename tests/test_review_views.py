"""Review: memoryviews the library hands out, exported in a garbage cycle, before CPython 3.12.7.

CPython before 3.12.7 crashes when its cyclic GC clears a memoryview that has
exports (gh-77894). The library keeps the view returned by a direct
``Region.__buffer__`` call reachable for that reason (on 3.12 only), but not the
one returned by ``Region.view()``: once a consumer exports it (``pickle.PickleBuffer``,
``memoryview.__buffer__`` on 3.12) and both end up in a cycle, the collector
segfaults the process. A plain ``memoryview(bytearray)`` does the same on these
versions; the library's own views are the ones it promises to guard.
"""

from __future__ import annotations

import sys

import pytest

from support import run_python

AFFECTED = sys.version_info < (3, 12, 7)

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


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(
            "__buffer__",
            id="__buffer__",
            marks=pytest.mark.xfail(
                sys.version_info < (3, 12),
                strict=True,
                reason="before 3.12 a direct __buffer__ call's view is not kept reachable either",
            ),
        ),
        pytest.param(
            "view",
            id="view",
            marks=pytest.mark.xfail(
                AFFECTED,
                strict=True,
                reason="Region.view() results are not kept reachable while exported (gh-77894)",
            ),
        ),
    ],
)
def test_a_handed_out_view_exported_in_a_garbage_cycle_does_not_crash(how: str) -> None:
    proc = run_python(CYCLE, args=[how], timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    assert "survived" in proc.stdout
