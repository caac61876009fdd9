"""The compiled accelerator (``inherit._speedups``) against the pure-Python reference.

The same battery of cases runs in two fresh interpreters, one with the
accelerator and one with ``INHERIT_PURE_PYTHON=1``, and every result, error
message included, must match. Where this install has no accelerator the
comparison cannot be made and is skipped (the pure-Python run of the whole
suite covers that install). Reference counts are checked by repetition: a
leak of one reference per call shows up as a count that grows with the calls.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
from typing import Any

import pytest

import inherit
from inherit import _runtime
from support import run_case, run_python

HAVE_ACCELERATOR = importlib.util.find_spec("inherit._speedups") is not None
needs_accelerator = pytest.mark.skipif(
    not HAVE_ACCELERATOR, reason="inherit._speedups is not built in this install"
)
FORCED_PURE = os.environ.get("INHERIT_PURE_PYTHON", "").strip() not in ("", "0")


def test_the_accelerator_is_built_where_ci_requires_it() -> None:
    """CI sets INHERIT_TEST_REQUIRE_ACCELERATOR=1: there a build that fell back to pure Python
    (auto mode, no compiler) must fail the accelerated environments instead of passing them."""
    if os.environ.get("INHERIT_TEST_REQUIRE_ACCELERATOR") != "1":
        pytest.skip("INHERIT_TEST_REQUIRE_ACCELERATOR is not set")
    if sysconfig.get_config_var("Py_GIL_DISABLED") or sys.implementation.name != "cpython":
        pytest.skip("the accelerator is built only for CPython with the GIL")
    assert HAVE_ACCELERATOR, "inherit._speedups was not built: the wheel fell back to pure Python"
    if not FORCED_PURE:
        assert _runtime.accelerated, _runtime.accelerator


def test_diagnostics_say_which_implementation_runs() -> None:
    report = inherit.diagnostics()
    assert report["accelerated"] is _runtime.accelerated
    if FORCED_PURE:
        assert report == {**report, "accelerated": False, "accelerator": "INHERIT_PURE_PYTHON is set"}
    elif HAVE_ACCELERATOR:
        assert report["accelerated"] is True
        assert report["accelerator"] == "inherit._speedups"
        assert inherit.generation.__module__ == "inherit._speedups"
    else:
        assert report["accelerated"] is False
        assert "not built" in report["accelerator"]


@pytest.mark.parametrize("value, accelerated", [("1", False), ("yes", False), ("0", True), ("", True)])
def test_the_pure_switch(value: str, accelerated: bool) -> None:
    proc = run_python(
        "import inherit, json; r = inherit.diagnostics(); "
        "print(json.dumps([r['accelerated'], r['accelerator']]))",
        env={"INHERIT_PURE_PYTHON": value},
    )
    assert proc.returncode == 0, proc.stderr
    got, why = json.loads(proc.stdout)
    assert got is (accelerated and HAVE_ACCELERATOR), why
    if not accelerated:
        assert why == "INHERIT_PURE_PYTHON is set"


# Every case prints a result or the exception it raised; the two runs must agree exactly.
BATTERY = r"""
import copy, pickle, weakref

def attempt(name, fn):
    try:
        value = fn()
        plain = isinstance(value, (int, float, str, bool, type(None), list))
        out[name] = ["ok", value if plain else repr(value)]
    except BaseException as exc:
        out[name] = [type(exc).__name__, str(exc)]

class Conn(inherit.ForkLocal, pickle="init"):
    def __init__(self, url, *, pool=1):
        self.url = url
        self.pool = pool

class Plain(inherit.ForkLocal):
    pass

conn = Conn("db:5432", pool=3)

def make(body):
    def build():
        namespace = {"inherit": inherit}
        exec(body, namespace)
        return "made"
    return build

attempt("slots", make("class S(inherit.ForkLocal):\n    __slots__ = ('x',)"))
for hook in ("__getattribute__", "__setattr__", "__delattr__"):
    attempt("override " + hook, make(f"class S(inherit.ForkLocal):\n    def {hook}(self, *a): pass"))
    attempt("assigned " + hook, make(
        f"class S(inherit.ForkLocal):\n    pass\nS.{hook} = lambda self, *a: None"))
    attempt("mixin " + hook, make(
        f"class M:\n    def {hook}(self, *a): pass\nclass S(M, inherit.ForkLocal):\n    pass"))
attempt("bad pickle mode", make("class S(inherit.ForkLocal, pickle='sometimes'):\n    pass"))
attempt("arguments without __init__", lambda: Plain(1))
attempt("missing attribute", lambda: Plain().nothing)
attempt("delete missing", lambda: delattr(Plain(), "nothing"))
attempt("read", lambda: [conn.url, conn.pool])
attempt("vars", lambda: sorted(vars(conn)))
attempt("set and delete", lambda: (setattr(conn, "extra", 1), delattr(conn, "extra"), sorted(vars(conn)))[2])
attempt("pickle refused", lambda: pickle.dumps(Plain()))
attempt("copy refused", lambda: copy.copy(Plain()))
attempt("pickle init", lambda: sorted(vars(pickle.loads(pickle.dumps(conn)))))
attempt("weakref", lambda: weakref.ref(conn)() is conn)
attempt("isinstance", lambda: isinstance(conn, inherit.ForkLocal))
attempt("stamp deleted", lambda: (delattr(Plain.__new__(Plain), "_forklocal_stamp")))
attempt("dict replaced", lambda: (setattr(conn, "__dict__", {"url": "x"}), conn.url)[1])

rng = inherit.Random(42)
attempt("seeded draws", lambda: [rng.random() for _ in range(3)] + [rng.getrandbits(70)])
attempt("gauss", lambda: inherit.Random(7).gauss())
attempt("reseeds", lambda: [inherit.Random().reseeds_on_fork, inherit.Random(1).reseeds_on_fork])
attempt("getrandbits(0)", lambda: rng.getrandbits(0))
attempt("getrandbits(-1)", lambda: rng.getrandbits(-1))
attempt("getrandbits('x')", lambda: rng.getrandbits("x"))
attempt("getrandbits()", lambda: rng.getrandbits())
attempt("getrandbits(1, 2)", lambda: rng.getrandbits(1, 2))
attempt("getrandbits(k=1)", lambda: rng.getrandbits(k=1))
attempt("random(1)", lambda: rng.random(1))
attempt("random(x=1)", lambda: rng.random(x=1))
attempt("copy of seeded", lambda: copy.copy(inherit.Random(3)).random() == inherit.Random(3).random())
attempt("pickle of seeded", lambda: pickle.loads(pickle.dumps(inherit.Random(3))).random())
class Mine(inherit.Random):
    def random(self):
        return super().random() / 2
attempt("subclass", lambda: Mine(5).random())

@inherit.per_process_cache(maxsize=2)
def square(n):
    "Squares."
    return n * n

class Holder:
    @inherit.per_process_cache
    def method(self, n):
        return n + 1

attempt("cache", lambda: [square(3), square(3), str(square.cache_info())])
attempt("cache clear", lambda: (square.cache_clear(), str(square.cache_info()))[1])
attempt("cache parameters", lambda: square.cache_parameters())
attempt("cache names", lambda: [square.__name__, square.__qualname__, square.__doc__, square.__wrapped__(4)])
attempt("cache method", lambda: Holder().method(1))
attempt("cache unhashable", lambda: square([1]))
attempt("cache arity", lambda: square(1, 2))
attempt("cache pickled", lambda: pickle.loads(pickle.dumps(square)) is square)
attempt("cache copied", lambda: copy.copy(square) is square)
attempt("cache repr", lambda: repr(square).split(" at ")[0])
attempt("generation type", lambda: type(inherit.generation()).__name__)

parent = inherit.generation()
def in_child():
    return {
        "moved": inherit.generation() != parent,
        "conn": [conn.url, conn.pool] if "url" in vars(conn) else sorted(vars(conn)),
        "cache": str(square.cache_info()),
        "draw differs": inherit.Random().random() != -1,
    }
out["children"] = {route: run_in_child(in_child, route=route, timeout=30) for route in ROUTES}
"""


@needs_accelerator
@pytest.mark.parametrize("backend", ["", "getpid"], ids=["default-backend", "getpid-backend"])
def test_both_implementations_behave_the_same(backend: str) -> None:
    accelerated = run_case(BATTERY, env={"INHERIT_BACKEND": backend, "INHERIT_PURE_PYTHON": "0"})
    pure = run_case(BATTERY, env={"INHERIT_BACKEND": backend, "INHERIT_PURE_PYTHON": "1"})
    assert accelerated.keys() == pure.keys()
    different = {key: (accelerated[key], pure[key]) for key in pure if accelerated[key] != pure[key]}
    assert not different, json.dumps(different, indent=1)
    # And the battery really exercised the rules:
    assert pure["slots"][0] == "TypeError"
    assert all(
        pure[f"{kind} {hook}"][0] == "TypeError"
        for kind in ("override", "assigned", "mixin")
        for hook in ("__getattribute__", "__setattr__", "__delattr__")
    )
    assert pure["pickle refused"][0] == "TypeError"
    for child in pure["children"].values():
        assert child["moved"] is True
        assert child["conn"] == ["db:5432", 3]
        assert child["cache"].startswith("CacheInfo(hits=0, misses=0")


REFCOUNTS = r"""
import gc

N = 20000

class Conn(inherit.ForkLocal):
    def __init__(self, marker=None):
        self.value = object()

@inherit.per_process_cache
def ident(x):
    return x

def growth(fn, *watched):
    # how many more references each watched object has after N more calls
    for _ in range(100):
        fn()
    gc.collect()
    before = [sys.getrefcount(obj) for obj in watched]
    for _ in range(N):
        fn()
    gc.collect()
    return [sys.getrefcount(obj) - b for obj, b in zip(watched, before)]

def swallow(fn):
    try:
        fn()
    except TypeError:
        pass

marker = object()
conn = Conn(marker)
stale = [Conn(marker) for _ in range(N + 100)]  # renewed one by one in the child
rng = inherit.Random()
bits = 77

def measure():
    gen = inherit.generation()
    each = iter(stale)
    return {
        "generation": growth(inherit.generation, gen),
        "read": growth(lambda: conn.value, conn.value, conn),
        "write": growth(lambda: setattr(conn, "other", marker), marker, conn),
        "delete": growth(lambda: (setattr(conn, "gone", marker), delattr(conn, "gone")), marker, conn),
        "missing": growth(lambda: getattr(conn, "nothing", None), conn),
        "random": growth(rng.random, rng),
        "getrandbits": growth(lambda: rng.getrandbits(bits), rng, bits),
        "wrong arguments": growth(lambda: swallow(lambda: rng.random(1)), rng),
        "cache hit": growth(lambda: ident(marker), marker, ident),
        "first touch": growth(lambda: next(each).value, marker, Conn),
        "new instance": growth(lambda: Conn(marker), gen, marker, Conn),
    }

out["parent"] = measure()
out["child"] = run_in_child(measure, route="libc.fork", timeout=120)
"""


@pytest.mark.parametrize("pure", ["0", "1"], ids=["accelerated", "pure"])
def test_no_call_leaks_a_reference(pure: str) -> None:
    if pure == "0" and not HAVE_ACCELERATOR:
        pytest.skip("inherit._speedups is not built in this install")
    out = run_case(REFCOUNTS, env={"INHERIT_PURE_PYTHON": pure}, timeout=240)
    for where in ("parent", "child"):
        leaks = {name: grown for name, grown in out[where].items() if any(abs(g) > 10 for g in grown)}
        assert not leaks, f"{where}: references grew over 20,000 calls: {leaks}"


@needs_accelerator
def test_a_subinterpreter_runs_the_pure_implementation() -> None:
    if sys.version_info < (3, 12):
        pytest.skip("isolated subinterpreters need 3.12+")
    from test_subinterpreters import HOST

    inside = r"""
import json, os
import inherit
report = inherit.diagnostics()
gen = inherit.generation()
os.write(WRITE_END, json.dumps({"accelerated": report["accelerated"], "why": report["accelerator"],
                                 "stable": inherit.generation() == gen}).encode())
"""
    host = (
        "CODE = "
        + repr(inside)
        + "\n"
        + HOST
        + "\nimport inherit\nprint('MAIN', inherit.diagnostics()['accelerated'])\n"
    )
    proc = run_python(host, env={"INHERIT_PURE_PYTHON": "0"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    result: dict[str, Any] = json.loads(lines["RESULT"])
    assert result["accelerated"] is False and result["stable"] is True
    assert "subinterpreter" in result["why"] or "main interpreter" in result["why"], result["why"]
    assert lines["MAIN"] == "True"


@needs_accelerator
def test_internal_entry_points_refuse_bad_input() -> None:
    code = r"""
import json
from inherit import _speedups
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "no error"
    except Exception as exc:
        out[name] = type(exc).__name__
attempt("install mode", lambda: _speedups.install(None, 7, len, len))
attempt("install page", lambda: _speedups.install(None, 1, len, len))
attempt("install empty page", lambda: _speedups.install(b"", 1, len, len))
attempt("random methods", lambda: _speedups.random_methods(int, str, len, len))
attempt("cached args", lambda: _speedups.CachedFunction(len))
wrapper = _speedups.CachedFunction(len, object(), lambda self: None)
del wrapper._cached
attempt("cache deleted", lambda: wrapper("abc"))
base = _speedups.ForkLocalBase()
attempt("bare base", lambda: base.anything)
print(json.dumps(out))
"""
    proc = run_python(code, env={"INHERIT_PURE_PYTHON": "0"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {
        "install mode": "ValueError",
        "install page": "TypeError",
        "install empty page": "ValueError",
        "random methods": "TypeError",
        "cached args": "TypeError",
        "cache deleted": "TypeError",
        "bare base": "AttributeError",
    }
