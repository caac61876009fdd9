"""Signals that land just after the slab's lock is released, placed there on purpose.

A random timer finds these windows only now and then; here a real signal is
raised at the exact instant (the lock's ``__exit__`` returns and raises it, as a
timer firing there would), so each case is deterministic. The handler takes a
region (it gets the slot just freed: the free list is LIFO), writes to it and
raises. Nothing the interrupted call does afterwards may touch that slot again:
not a second free (two live regions would share it), not a second wipe (the
handler's bytes would vanish).
"""

from __future__ import annotations

import pytest

from support import run_case

pytestmark = pytest.mark.skipif(
    not hasattr(__import__("signal"), "raise_signal"), reason="needs signal.raise_signal"
)

PLACED_SIGNAL = r"""
import _thread, signal
from inherit import _region, _runtime as rt

inherit.generation()
held, armed = [], [False]

class Interrupt(BaseException):  # as KeyboardInterrupt is
    pass

def handler(signum, frame):
    armed[0] = False
    region = KEEP(inherit.zero_on_fork(16))
    region[:] = b"S" * 16
    held.append(region)
    raise Interrupt

signal.signal(signal.SIGUSR1, handler)

class Lock(_thread.RLock):
    def __exit__(self, *exc):
        super().__exit__(*exc)
        if armed[0] and not rt.is_owned(self):
            signal.raise_signal(signal.SIGUSR1)  # lands at the next bytecode boundary

rt.lock = Lock()

def report():
    region = held[0]
    other = KEEP(inherit.zero_on_fork(16))
    out["handler_bytes_intact"] = bytes(region) == b"S" * 16
    out["slot_handed_out_twice"] = other._arena is region._arena and other._offset == region._offset
"""

RETIRE = (
    PLACED_SIGNAL.replace("KEEP", "inherit.keep_on_fork")
    + r"""
victim = inherit.zero_on_fork(16)
view = victim.view()
real_retire = _region._retire

def retire(*args):  # arm at the failed move's retire: the signal lands as it releases the lock
    armed[0] = True
    return real_retire(*args)

_region._retire = retire
try:
    inherit.keep_on_fork(victim)  # a live view: BufferError, and the new slot is retired
except (Interrupt, BufferError) as exc:
    out["raised"] = type(exc).__name__
view.release()
out["handler_ran"] = bool(held)
report()
"""
)

FINALIZER = (
    PLACED_SIGNAL.replace("KEEP", "")
    + r"""
import sys
sys.unraisablehook = lambda args: None  # the handler's exception inside __del__ is reported, not raised
victim = inherit.zero_on_fork(16)
victim[:] = b"v" * 16
armed[0] = True
del victim  # the finalizer frees the slot, the lock is released, the handler takes the slot
out["handler_ran"] = bool(held)
report()
"""
)


@pytest.mark.parametrize("case", ["retire", "finalizer"])
@pytest.mark.parametrize("backend", ["", "getpid"], ids=["default-backend", "getpid-backend"])
def test_a_signal_after_a_free_never_sees_its_slot_touched_again(case: str, backend: str) -> None:
    body = RETIRE if case == "retire" else FINALIZER
    out = run_case(body, env={"INHERIT_BACKEND": backend}, timeout=60)
    assert out["handler_ran"], f"the placed signal never ran: nothing was tested ({out})"
    assert out["handler_bytes_intact"], f"the interrupted call wiped the handler's live region: {out}"
    assert not out["slot_handed_out_twice"], f"one slot belongs to two live regions: {out}"
