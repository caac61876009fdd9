"""What the per-process state types promise across fork, pickle, copy and subclassing.

Regressions for issue-level defects: a pickled reseeding Random replayed its
parent's stream in spawn workers; a ForkLocal subclass overriding ``__new__``
re-ran ``__init__`` with the wrong arguments; overriding attribute access
bypassed fork detection; a fork cost O(live instances); per_process_cache was
not a drop-in for ``functools.lru_cache``.
"""

from __future__ import annotations

import copy
import functools
import json
import pickle
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import inherit
from inherit.testing import available_routes, run_in_child

ROUTES = [r for r in available_routes() if r != "multiprocessing"]

# -- Random: never the same stream in two processes, whatever carried it there ----------------------

POOL_SCRIPT = """
import json, multiprocessing, sys
import inherit

RNG = inherit.Random()
SEEDED = inherit.Random(42)

def draw(rng):
    return [rng.random() for _ in range(3)]

if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[1])
    with context.Pool(4) as pool:
        auto = pool.map(draw, [RNG] * 8, chunksize=1)
        seeded = pool.map(draw, [SEEDED] * 4, chunksize=1)
    print(json.dumps({"auto": auto, "parent": draw(RNG), "seeded": seeded, "seeded_parent": draw(SEEDED)}))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_random_sent_to_pool_workers_never_repeats_a_stream(method: str, tmp_path: Path) -> None:
    if method == "forkserver" and sys.platform == "darwin":
        pytest.skip("no forkserver on macOS")
    import subprocess

    script = tmp_path / "pool_random.py"  # spawn and forkserver workers import the main module
    script.write_text(textwrap.dedent(POOL_SCRIPT))
    proc = subprocess.run(
        [sys.executable, str(script), method],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    streams = [tuple(s) for s in out["auto"]] + [tuple(out["parent"])]
    assert len(set(streams)) == len(streams), f"{method}: two processes drew the same stream"
    # An explicitly seeded Random asked for a repeatable stream: every worker continues it.
    seeded = random_42_stream(3)
    assert all(s == seeded for s in out["seeded"]) and out["seeded_parent"] == seeded


def random_42_stream(n: int) -> list[float]:
    rng = inherit.Random(42)
    return [rng.random() for _ in range(n)]


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r))])
def test_copies_of_a_reseeding_random_start_their_own_stream(duplicate: Any) -> None:
    original = inherit.Random()
    twin = duplicate(original)
    assert twin.reseeds_on_fork
    assert [twin.random() for _ in range(4)] != [original.random() for _ in range(4)]
    child = run_in_child(lambda: twin.random(), route="os.fork")
    assert child != twin.random()


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r))])
def test_copies_of_a_seeded_random_repeat_it(duplicate: Any) -> None:
    original = inherit.Random(7)
    original.random()
    twin = duplicate(original)
    assert not twin.reseeds_on_fork
    assert [twin.random() for _ in range(4)] == [original.random() for _ in range(4)]


def test_random_subclass_state_survives_pickling() -> None:
    class Tagged(inherit.Random):
        pass

    rng = Tagged(3)
    rng.tag = "mine"  # type: ignore[attr-defined]
    again = copy.deepcopy(rng)
    assert isinstance(again, Tagged) and again.tag == "mine" and again.random() == rng.random()


# -- ForkLocal: the original arguments, whatever __new__ does ---------------------------------------


class NewWithDefault(inherit.ForkLocal):
    def __new__(cls, url: str = "localhost:5432") -> NewWithDefault:
        return super().__new__(cls)

    def __init__(self, url: str = "localhost:5432") -> None:
        self.url = url


class NewWithoutDefault(inherit.ForkLocal):
    def __new__(cls, *args: Any, **kwargs: Any) -> NewWithoutDefault:
        return super().__new__(cls)

    def __init__(self, url: str, *, pool_size: int) -> None:
        self.url = url
        self.pool_size = pool_size


class Base(inherit.ForkLocal):
    def __init__(self, url: str) -> None:
        self.url = url
        self.calls = getattr(self, "calls", 0) + 1


class Derived(Base):
    def __init__(self, name: str) -> None:
        super().__init__(f"db://{name}")
        self.name = name


@pytest.mark.parametrize("route", ROUTES)
def test_init_reruns_with_the_arguments_it_was_built_with(route: str) -> None:
    a = NewWithDefault("db.prod:5432")
    b = NewWithoutDefault("db.prod:5432", pool_size=9)
    c = Derived("orders")
    for obj in (a, b, c):
        obj.__dict__["parent_only"] = True

    def child() -> list[Any]:
        return [a.url, b.url, b.pool_size, c.url, c.name, c.calls, "parent_only" in vars(a)]

    assert run_in_child(child, route=route) == [
        "db.prod:5432",
        "db.prod:5432",
        9,
        "db://orders",
        "orders",
        1,
        False,
    ]


def test_init_keeps_its_signature_for_introspection() -> None:
    import inspect

    assert list(inspect.signature(Derived).parameters) == ["name"]
    assert Derived.__init__.__wrapped__.__name__ == "__init__"  # type: ignore[attr-defined]
    assert Derived.__init__.__qualname__.endswith("Derived.__init__")


# -- ForkLocal: attribute access cannot be bypassed --------------------------------------------------


@pytest.mark.parametrize("hook", ["__getattribute__", "__setattr__", "__delattr__"])
def test_overriding_attribute_access_is_refused_at_class_creation(hook: str) -> None:
    body = {hook: lambda self, *args: object.__getattribute__(self, *args[:1])}
    with pytest.raises(TypeError, match=hook):
        type("Bypass", (inherit.ForkLocal,), body)


def test_getattr_fallback_is_allowed_and_sees_only_this_process() -> None:
    class WithFallback(inherit.ForkLocal):
        def __getattr__(self, name: str) -> str:
            return f"default-{name}"

    obj = WithFallback()
    obj.token = "parent-secret"
    assert obj.token == "parent-secret"
    assert run_in_child(lambda: obj.token, route="libc.fork") == "default-token"


# -- ForkLocal: O(1) at a fork, fast path at once --------------------------------------------------


def test_a_fork_touches_no_instance_and_reads_are_back_on_the_fast_path(monkeypatch: Any) -> None:
    from inherit import _runtime

    class Conn(inherit.ForkLocal):
        def __init__(self) -> None:
            self.value = 1

    instances = [Conn() for _ in range(100_000)]
    stamps = {id(obj): _runtime._get_stamp(obj) for obj in instances[:1000]}

    def child() -> dict[str, Any]:
        calls = []
        real = _runtime._make_current

        def counting(obj: Any) -> None:
            calls.append(id(obj))
            real(obj)

        _runtime._make_current = counting
        gen = inherit.generation()
        untouched = sum(_runtime._get_stamp(obj) is stamps[id(obj)] for obj in instances[:1000])
        one = instances[0]
        first = one.value  # the first touch renews it (its __init__ re-runs)
        renewed = bool(calls)
        calls.clear()
        total = first + sum(one.value for _ in range(9_999))
        return {
            "untouched": untouched,
            "renewed": renewed,
            "slow_after": len(calls),
            "total": total,
            "moved": gen != parent,
        }

    parent = inherit.generation()
    out = run_in_child(child, route="libc.fork", timeout=60)
    assert out == {"untouched": 1000, "renewed": True, "slow_after": 0, "total": 10_000, "moved": True}


# -- per_process_cache: a drop-in for functools.lru_cache -------------------------------------------

FORMS: list[tuple[str, Any]] = [
    ("bare", lambda deco: deco),
    ("()", lambda deco: deco()),
    ("(32)", lambda deco: deco(32)),
    ("(maxsize=2)", lambda deco: deco(maxsize=2)),
    ("(0)", lambda deco: deco(0)),
    ("(None)", lambda deco: deco(None)),
    ("(-5)", lambda deco: deco(-5)),
    ("(True)", lambda deco: deco(True)),
    ("(8, typed=True)", lambda deco: deco(8, typed=True)),
    ("(maxsize=None, typed=True)", lambda deco: deco(maxsize=None, typed=True)),
]


@pytest.mark.parametrize("form", [f for _, f in FORMS], ids=[n for n, _ in FORMS])
def test_same_calls_same_answers_as_lru_cache(form: Any) -> None:
    def make(deco: Any) -> Any:
        seen: list[Any] = []

        def f(x: Any, y: Any = 0) -> Any:
            seen.append((x, y))
            return (x, y, len(seen))

        return form(deco)(f), seen

    ours, ours_seen = make(inherit.per_process_cache)
    theirs, their_seen = make(functools.lru_cache)
    calls = [(1,), (1,), (2, 3), (1.0,), (1,), (2,), (3,), (1,), (True,), (2, 3)] * 3
    for args in calls:
        assert ours(*args) == theirs(*args)
    assert ours_seen == their_seen
    assert ours.cache_info() == theirs.cache_info()
    assert ours.cache_parameters() == theirs.cache_parameters()
    assert ours.__wrapped__ is not None and ours.__name__ == theirs.__name__ == "f"
    ours.cache_clear()
    theirs.cache_clear()
    assert ours.cache_info() == theirs.cache_info()


def test_methods_classmethods_and_staticmethods_like_lru_cache() -> None:
    class Both:
        def __init__(self, k: int) -> None:
            self.k = k

        @inherit.per_process_cache
        def ours(self, x: int) -> int:
            return self.k * x

        @functools.lru_cache  # noqa: B019 - the comparison is the point
        def theirs(self, x: int) -> int:
            return self.k * x

        @staticmethod
        @inherit.per_process_cache(maxsize=4)
        def static(x: int) -> int:
            return x + 1

        @classmethod
        @inherit.per_process_cache
        def klass(cls, x: int) -> str:
            return f"{cls.__name__}{x}"

    a, b = Both(2), Both(3)
    assert [a.ours(5), b.ours(5), a.ours(5)] == [a.theirs(5), b.theirs(5), a.theirs(5)]
    assert Both.ours.cache_info().currsize == Both.theirs.cache_info().currsize == 2
    assert Both.static(1) == 2 and Both.klass(3) == "Both3"
    assert run_in_child(lambda: (Both.ours.cache_info().currsize, a.ours(5)), route="libc.fork") == (0, 10)


def test_a_non_callable_first_argument_is_refused_as_lru_cache_refuses_it() -> None:
    for value in ("name", 3.5, [1, 2], object()):
        with pytest.raises(TypeError) as ours:
            inherit.per_process_cache(value)
        with pytest.raises(TypeError) as theirs:
            functools.lru_cache(value)
        assert str(ours.value) == str(theirs.value)
