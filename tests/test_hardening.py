"""Regressions found in review: hangs after forks at awkward moments, views that
outlived a region, settings lost in copies, and inputs that slipped through."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

import inherit
from inherit.testing import available_routes, run_in_child
from support import run_python

ROUTES = [r for r in ("os.fork", "libc.fork") if r in available_routes()]


@pytest.mark.parametrize("route", ROUTES)
def test_fork_while_another_thread_chooses_the_backend(route: str) -> None:
    """The selection lock is held for the whole (here slowed) verification."""
    code = f"""
    import json, threading, time
    import inherit
    from inherit import backends
    from inherit.testing import run_in_child
    real_make = backends.make
    def slow_make(name):
        backend = real_make(name)
        verify = backend.verify
        def slow_verify():
            time.sleep(0.5)
            return verify()
        backend.verify = slow_verify
        return backend
    backends.make = slow_make
    t = threading.Thread(target=inherit.generation)
    t.start()
    time.sleep(0.1)  # the thread now holds the selection lock
    child = run_in_child(lambda: (inherit.generation(), inherit.backend()), route={route!r}, timeout=20)
    t.join()
    print(json.dumps({{"child": child, "parent": inherit.generation()}}))
    """
    out = run_python(code, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["child"][0] != result["parent"]


@pytest.mark.parametrize("route", ROUTES)
def test_finalizer_touching_the_library_during_detection(route: str) -> None:
    """Detection allocates, allocation runs the collector, a finalizer calls generation()."""
    code = f"""
    import gc, json
    import inherit
    from inherit.testing import run_in_child
    locals_ = [inherit.ForkLocal() for _ in range(2000)]
    for obj in locals_:
        obj.value = 1
    class Touches:
        def __del__(self):
            inherit.generation()
            locals_[0].__dict__
    def child():
        gc.set_threshold(1)
        cycle = [Touches()]
        cycle.append(cycle)
        del cycle
        return inherit.generation()
    parent = inherit.generation()
    print(json.dumps([parent, run_in_child(child, route={route!r}, timeout=20)]))
    """
    out = run_python(code, timeout=60)
    assert out.returncode == 0, out.stderr
    parent, child = json.loads(out.stdout)
    assert parent != child


def test_forklocal_subclass_with_slots_is_refused() -> None:
    with pytest.raises(TypeError, match="__slots__"):

        class Slotted(inherit.ForkLocal):
            __slots__ = ("conn",)


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r))])
def test_copies_of_random_keep_reseeding(duplicate: object) -> None:
    rng = duplicate(inherit.Random())  # type: ignore[operator]
    assert rng.reseeds_on_fork
    draws = {run_in_child(rng.random) for _ in range(2)}
    assert len(draws) == 2
    seeded = duplicate(inherit.Random(42))  # type: ignore[operator]
    assert not seeded.reseeds_on_fork


@pytest.mark.parametrize("attribute", ["on_fork", "secret", "locked", "dumpable"])
def test_closed_region_properties_raise(attribute: str) -> None:
    region = inherit.zero_on_fork(8)
    region.close()
    with pytest.raises(ValueError):
        getattr(region, attribute)
    assert "closed" in repr(region)


class _IndexReturnsStr:
    def __index__(self) -> str:  # type: ignore[override]
        return "16"


def test_index_returning_a_non_int_is_refused() -> None:
    with pytest.raises(TypeError):
        inherit.zero_on_fork(_IndexReturnsStr())  # type: ignore[arg-type]
    with inherit.zero_on_fork(32) as region, pytest.raises(TypeError):
        region[_IndexReturnsStr()]  # type: ignore[call-overload]
