"""``ForkLocal``: per-process attributes; a subclass's ``__init__`` runs again in a forked child.

Route-dependent tests run once per route in ``inherit.testing.available_routes()``. Children
report what they saw (return values); the parent makes the assertions.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
import threading
import time
import tracemalloc
import uuid
import weakref
from pathlib import Path
from typing import Any, ClassVar

import pytest

import inherit
from inherit.testing import run_in_child

ABSENT = "<absent>"

# (pid, url, size) for every Conn.__init__ that ran, in any process (each child has its own copy).
INIT_LOG: list[tuple[int, str, int]] = []
# URLs for which Conn.__init__ raises (set in a child to make its re-initialisation fail).
FAILING: set[str] = set()


def _inits(url: str) -> int:
    """How many times Conn.__init__ ran for ``url`` in this process."""
    pid = os.getpid()
    return sum(1 for p, u, _ in INIT_LOG if p == pid and u == url)


def _new_url() -> str:
    return f"db://{uuid.uuid4().hex}"


class Conn(inherit.ForkLocal):
    """A connection-like object: remembers its arguments and logs each ``__init__``."""

    def __init__(self, url: str, *, size: int = 1) -> None:
        INIT_LOG.append((os.getpid(), url, size))
        if url in FAILING:
            self.partial = True
            raise RuntimeError(f"cannot connect to {url}")
        self.url = url
        self.size = size
        self.inits = _inits(url)


class SlowConn(Conn):
    """``__init__`` takes a while, so threads that touch the instance meanwhile must wait."""

    def __init__(self, url: str, *, size: int = 1) -> None:
        time.sleep(0.02)  # widens the race window; nothing asserts on time
        super().__init__(url, size=size)


class SelfReading(inherit.ForkLocal):
    """``__init__`` reads back what it just set, and probes an attribute it never set."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.double = self.n * 2
        self.had_missing = hasattr(self, "missing")
        self.seen = dict(vars(self))


class NoInit(inherit.ForkLocal):
    """A subclass without ``__init__``: behaves like a bare ForkLocal."""


class Plain(inherit.ForkLocal):
    def __init__(self, n: int) -> None:
        self.n = n


def _snapshot(obj: Conn) -> dict[str, Any]:
    """What a Conn looks like (no first-touch subtleties: call after the touch under test)."""
    return {"vars": dict(vars(obj)), "inits": _inits(obj.url)}


# --- a subclass is re-initialised with the original arguments -------------------------------------


def test_subclass_first_get_in_child_reinitialises(fork_route: str) -> None:
    """Reading an attribute first: __init__ runs once with the original (keyword) arguments."""
    url = _new_url()
    conn = Conn(url, size=3)
    conn.session = "parent-only"
    conn.size = 99  # changed after __init__ in the parent: the child gets the init value back

    def child() -> dict[str, Any]:
        first = conn.url  # first touch
        return {"first": first, "session": getattr(conn, "session", ABSENT), **_snapshot(conn)}

    seen = run_in_child(child, route=fork_route)
    assert seen["first"] == url
    assert seen["session"] == ABSENT, "an attribute set in the parent survived into the child"
    assert seen["vars"] == {"url": url, "size": 3, "inits": 1}
    assert seen["inits"] == 1, "__init__ ran more than once in the child"
    # The parent is untouched.
    assert conn.session == "parent-only" and conn.size == 99
    assert _inits(url) == 1


def test_subclass_default_keyword_is_kept(fork_route: str) -> None:
    """A keyword left at its default is re-applied as the default, not lost."""
    url = _new_url()
    conn = Conn(url)

    def child() -> dict[str, Any]:
        return _snapshot(conn)

    assert run_in_child(child, route=fork_route)["vars"] == {"url": url, "size": 1, "inits": 1}


def test_subclass_first_set_in_child_reinitialises_then_sets(fork_route: str) -> None:
    """Setting first: re-initialisation happens before the write, so the write survives."""
    url = _new_url()
    conn = Conn(url, size=2)

    def child() -> dict[str, Any]:
        conn.size = 42  # first touch overwrites a value that __init__ sets
        conn.extra = "child"
        return _snapshot(conn)

    seen = run_in_child(child, route=fork_route)
    assert seen["vars"] == {"url": url, "size": 42, "inits": 1, "extra": "child"}
    assert seen["inits"] == 1
    assert conn.size == 2 and not hasattr(conn, "extra")


def test_subclass_first_delete_in_child_reinitialises_then_deletes(fork_route: str) -> None:
    """Deleting first: __init__ runs, then the deletion applies to the fresh state."""
    url = _new_url()
    conn = Conn(url, size=5)

    def child() -> dict[str, Any]:
        del conn.size  # first touch
        return _snapshot(conn)

    seen = run_in_child(child, route=fork_route)
    assert seen["vars"] == {"url": url, "inits": 1}
    assert seen["inits"] == 1
    assert conn.size == 5


def test_subclass_first_delete_of_parent_only_attribute_fails(fork_route: str) -> None:
    """Deleting an attribute that only the parent had: it is gone, so AttributeError."""
    url = _new_url()
    conn = Conn(url)
    conn.token = "secret"

    def child() -> dict[str, Any]:
        try:
            del conn.token  # first touch
        except AttributeError:
            outcome = "AttributeError"
        else:
            outcome = "deleted"
        return {"outcome": outcome, **_snapshot(conn)}

    seen = run_in_child(child, route=fork_route)
    assert seen["outcome"] == "AttributeError"
    assert seen["vars"] == {"url": url, "size": 1, "inits": 1}
    assert conn.token == "secret"


def test_vars_as_first_touch_in_child(fork_route: str) -> None:
    """vars() reads __dict__ through the instance, so it counts as a touch."""
    url = _new_url()
    conn = Conn(url, size=4)
    conn.session = "parent-only"
    bare = inherit.ForkLocal()
    bare.token = "parent-only"

    def child() -> dict[str, Any]:
        return {"conn": dict(vars(conn)), "bare": dict(vars(bare)), "inits": _inits(url)}

    seen = run_in_child(child, route=fork_route)
    assert seen["conn"] == {"url": url, "size": 4, "inits": 1}
    assert seen["bare"] == {}
    assert seen["inits"] == 1


def test_grandchild_reinitialises_again(fork_route: str) -> None:
    """Re-initialisation happens in every generation: the grandchild runs __init__ itself."""
    url = _new_url()
    conn = Conn(url)

    def grandchild() -> dict[str, Any]:
        return _snapshot(conn)

    def child() -> dict[str, Any]:
        conn.note = "child"
        route = "os.fork" if fork_route == "multiprocessing" else fork_route
        return {"child": _snapshot(conn), "grandchild": run_in_child(grandchild, route=route)}

    seen = run_in_child(child, route=fork_route)
    assert seen["child"]["vars"] == {"url": url, "size": 1, "inits": 1, "note": "child"}
    assert seen["grandchild"]["vars"] == {"url": url, "size": 1, "inits": 1}
    assert seen["grandchild"]["inits"] == 1


def test_init_that_reads_its_own_attributes(fork_route: str) -> None:
    """__init__ may read what it just set (and probe what it did not) while re-initialising."""
    obj = SelfReading(7)
    expected = {
        "n": 7,
        "double": 14,
        "had_missing": False,
        "seen": {"n": 7, "double": 14, "had_missing": False},
    }
    assert vars(obj) == expected
    obj.n = 100  # the child must get 7 back from __init__, not this

    def child() -> dict[str, Any]:
        return dict(vars(obj))

    assert run_in_child(child, route=fork_route) == expected


def test_init_that_raises_in_child_propagates_and_retries(fork_route: str) -> None:
    """A failing re-initialisation raises to the toucher; the next touch tries again."""
    url = _new_url()
    conn = Conn(url, size=2)

    def child() -> dict[str, Any]:
        FAILING.add(url)
        errors = []
        for _ in range(2):
            try:
                conn.url  # noqa: B018 - the touch is the point
            except RuntimeError as exc:
                errors.append(str(exc))
        FAILING.discard(url)
        value = conn.url
        return {"errors": errors, "value": value, "inits": _inits(url), "vars": dict(vars(conn))}

    seen = run_in_child(child, route=fork_route)
    assert seen["errors"] == [f"cannot connect to {url}"] * 2
    assert seen["value"] == url
    assert seen["inits"] == 3, "expected two failed attempts and one that worked"
    # The failed attempts' partial state was cleared by the retry.
    assert seen["vars"] == {"url": url, "size": 2, "inits": 3}


# --- a bare ForkLocal is empty in the child -------------------------------------------------------


def test_bare_forklocal_is_empty_in_child(fork_route: str) -> None:
    """Attributes set in the parent are absent in the child; the child can set its own."""
    obj = inherit.ForkLocal()
    obj.a = 1
    sub = NoInit()
    sub.a = 2

    def child() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for name, target in (("bare", obj), ("sub", sub)):
            try:
                seen[name] = target.a  # first touch
            except AttributeError:
                seen[name] = ABSENT
            target.b = f"{name} in child"
            seen[name + ".b"] = target.b
            seen[name + ".vars"] = dict(vars(target))
        return seen

    seen = run_in_child(child, route=fork_route)
    assert seen["bare"] == ABSENT and seen["sub"] == ABSENT
    assert seen["bare.b"] == "bare in child" and seen["sub.b"] == "sub in child"
    assert seen["bare.vars"] == {"b": "bare in child"}
    assert seen["sub.vars"] == {"b": "sub in child"}
    # Nothing leaks back.
    assert vars(obj) == {"a": 1} and vars(sub) == {"a": 2}


def test_values_set_in_child_do_not_leak_to_parent(fork_route: str) -> None:
    """The child's writes and its re-initialisation stay in the child."""
    url = _new_url()
    conn = Conn(url, size=6)

    def child() -> str:
        conn.url = "db://child"
        conn.extra = [1, 2, 3]
        del conn.size
        return conn.url

    assert run_in_child(child, route=fork_route) == "db://child"
    assert vars(conn) == {"url": url, "size": 6, "inits": 1}
    assert _inits(url) == 1


def test_parent_keeps_its_state_across_many_children() -> None:
    """The parent's instance is never re-initialised because it forked."""
    url = _new_url()
    conn = Conn(url)
    conn.session = "parent"
    for _ in range(3):
        run_in_child(lambda: conn.url)
    assert conn.session == "parent"
    assert _inits(url) == 1


# --- threads ------------------------------------------------------------------------------------


def test_shared_by_all_threads_of_a_process() -> None:
    """Unlike threading.local, every thread sees the same attributes and __init__ runs once."""
    url = _new_url()
    conn = Conn(url)
    conn.pool = pool = object()
    seen: list[Any] = []

    def worker(i: int) -> None:
        seen.append((conn.url, conn.pool))
        setattr(conn, f"t{i}", i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [(url, pool)] * 4
    assert {f"t{i}" for i in range(4)} <= set(vars(conn))
    assert _inits(url) == 1


def _threads_touch_after_fork(conn: Conn, count: int) -> dict[str, Any]:
    """In a fresh child: ``count`` threads released together touch ``conn`` first."""
    barrier = threading.Barrier(count)
    seen: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=20)
            if i % 2:
                setattr(conn, f"t{i}", i)  # half the threads write first ...
                seen.append((conn.url, conn.size))
            else:
                seen.append((conn.url, conn.size))  # ... half read first
                setattr(conn, f"t{i}", i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {"seen": seen, "inits": _inits(conn.url), "vars": sorted(vars(conn))}


def test_threads_touching_after_fork_init_runs_once(fork_route: str) -> None:
    """Threads that touch the instance at once in a child: one __init__, no write lost."""
    url = _new_url()
    conn = SlowConn(url, size=8)
    result = run_in_child(_threads_touch_after_fork, conn, 8, route=fork_route)
    assert result["inits"] == 1, "__init__ ran more than once in the child"
    assert result["seen"] == [(url, 8)] * 8
    # A second __init__ (or a late clear) would have wiped some thread's write.
    assert result["vars"] == sorted(["url", "size", "inits", *(f"t{i}" for i in range(8))])


def _park_on_first_library_call(entered: threading.Event, resume: threading.Event) -> Any:
    """A per-thread trace function: park the thread the first time it enters inherit's code."""
    package = str(Path(inherit.__file__).parent)

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and not entered.is_set() and frame.f_code.co_filename.startswith(package):
            entered.set()
            resume.wait(20)
        return None

    return tracer


def _race_detection_against_touch(obj: inherit.ForkLocal, op: str, name: str) -> dict[str, Any]:
    """In a fresh child: a thread starts touching ``obj``, then another detects the fork.

    Deterministic interleaving: a trace function parks the toucher as soon as its attribute
    access enters the library, the main thread calls generation() (which notices the fork
    unless an at-fork hook already did), then the toucher goes on.
    """
    entered, resume = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def toucher() -> None:
        sys.settrace(_park_on_first_library_call(entered, resume))
        try:
            if op == "get":
                result["read"] = getattr(obj, name, ABSENT)
            else:
                setattr(obj, name, "child")
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=toucher)
    thread.start()
    entered_in_time = entered.wait(20)
    inherit.generation()  # detection happens while the toucher is inside the library
    resume.set()
    thread.join()
    result["entered"] = entered_in_time
    result["after"] = getattr(obj, name, ABSENT)
    result["vars"] = dict(vars(obj))
    result["inits"] = _inits(obj.url) if isinstance(obj, Conn) else 0
    return result


@pytest.mark.parametrize("op", ["get", "set"])
@pytest.mark.parametrize("kind", ["bare", "subclass"])
def test_touch_racing_with_detection_in_child(fork_route: str, op: str, kind: str) -> None:
    """A thread already inside the attribute hook when another thread detects the fork.

    Its access must behave as a first touch: no parent value read, the subclass's __init__
    run before the read or write, and no write wiped by a later re-initialisation. (With the
    getpid backend, or where an at-fork hook detects the fork eagerly, there is no window.)
    """
    url = _new_url()
    if kind == "bare":
        obj: inherit.ForkLocal = inherit.ForkLocal()
        obj.size = "parent"
        fresh: dict[str, Any] = {}
    else:
        obj = Conn(url, size=3)
        obj.size = "parent"
        fresh = {"url": url, "size": 3, "inits": 1}
    result = run_in_child(_race_detection_against_touch, obj, op, "size", route=fork_route)
    if not result["entered"]:
        pytest.fail("the toucher never entered the library (test set-up broken)")
    if op == "get":
        assert result["read"] == fresh.get("size", ABSENT), "the racing read did not see a first touch"
        assert result["vars"] == fresh
    else:
        assert result["after"] == "child", "a write made in the child was lost"
        assert result["vars"] == {**fresh, "size": "child"}
    if kind == "subclass":
        assert result["inits"] == 1


# --- lifetime, misuse ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [inherit.ForkLocal, NoInit, Plain])
def test_instances_die_normally(cls: type[inherit.ForkLocal]) -> None:
    """Nothing global holds instances strongly."""
    obj = cls(1) if cls is Plain else cls()
    obj.x = 1
    ref = weakref.ref(obj)
    del obj
    gc.collect()
    assert ref() is None


def test_instances_die_normally_after_reinitialising_in_child(fork_route: str) -> None:
    """The per-process bookkeeping done on first touch in a child holds no strong reference."""
    holder = [Conn(_new_url())]

    def child() -> bool:
        holder[0].url  # noqa: B018 - first touch re-initialises
        ref = weakref.ref(holder[0])
        holder.clear()
        gc.collect()
        return ref() is None

    assert run_in_child(child, route=fork_route) is True


def _churn(count: int) -> None:
    """Create, touch and drop instances, one at a time and in a batch."""
    for i in range(count // 2):
        obj = Plain(i)
        obj.extra = obj.n
    batch = [inherit.ForkLocal() for _ in range(count // 2)]
    for obj in batch:
        obj.extra = 1
    del batch


def test_creating_and_dropping_many_instances_does_not_grow() -> None:
    """10 000 instances created and dropped leave no objects or memory behind."""
    package = str(Path(inherit.__file__).parent)
    _churn(200)  # warm up any lazily built state
    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        _churn(10_000)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    objects_after = len(gc.get_objects())
    kept = sum(
        stat.size_diff
        for stat in after.compare_to(before, "filename")
        if stat.size_diff > 0 and stat.traceback[0].filename.startswith(package)
    )
    # Instances are not tracked at all (a fork does nothing per instance).
    assert objects_after - objects_before < 1_000, "instances (or something per instance) kept alive"
    assert kept < 64 * 1024, f"{kept} bytes allocated in inherit/ and still held"


@pytest.mark.parametrize("cls", [inherit.ForkLocal, NoInit])
def test_arguments_without_init_are_a_type_error(cls: type[inherit.ForkLocal]) -> None:
    """Without an __init__ there is nothing to re-run with the arguments: refuse them."""
    with pytest.raises(TypeError):
        cls(1)
    with pytest.raises(TypeError):
        cls(x=1)
    cls()  # no arguments is fine


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_is_a_type_error(protocol: int) -> None:
    """Per-process state must not travel to another process."""
    bare = inherit.ForkLocal()
    bare.x = 1
    for obj in (bare, Conn(_new_url())):
        with pytest.raises(TypeError):
            pickle.dumps(obj, protocol=protocol)


# --- class hierarchies with hooks -----------------------------------------------------------------


class Tagged(inherit.ForkLocal):
    """A base whose subclasses must name a tag: a common registry pattern."""

    registry: ClassVar[dict[str, list[str]]] = {}

    def __init_subclass__(cls, /, *, tag: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Tagged.registry.setdefault(tag, []).append(cls.__qualname__)


class TaggedConn(Tagged, tag="conn"):
    def __init__(self, url: str) -> None:
        self.url = url


def test_subclass_with_init_subclass_keywords_renews_in_child(fork_route: str) -> None:
    """A hierarchy whose __init_subclass__ requires keywords still works after a fork.

    The user's class hook must not run again in the child (it has side effects and may need
    arguments only the class statement had), and generation() must keep working there.
    """
    url = _new_url()
    conn = TaggedConn(url)
    conn.session = "parent-only"
    parent_generation = inherit.generation()

    def child() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        try:
            seen["generation_moved"] = inherit.generation() != parent_generation
        except Exception as exc:
            seen["generation_moved"] = repr(exc)
        try:
            seen["vars"] = dict(vars(conn))
        except Exception as exc:
            seen["vars"] = repr(exc)
        seen["registry"] = {tag: list(names) for tag, names in Tagged.registry.items()}
        seen["type_is_real"] = type(conn) is TaggedConn
        return seen

    seen = run_in_child(child, route=fork_route)
    assert seen["generation_moved"] is True, f"generation() in the child: {seen['generation_moved']}"
    assert seen["vars"] == {"url": url}
    assert seen["registry"] == {"conn": ["TaggedConn"]}, "the class hook ran again in the child"
    assert seen["type_is_real"]


class Backend(inherit.ForkLocal):
    """A plugin base whose subclasses are discovered with __subclasses__()."""


class FileBackend(Backend):
    def __init__(self, path: str) -> None:
        self.path = path


def test_class_hierarchy_is_unchanged_in_child(fork_route: str) -> None:
    """Forking adds no classes the program can see, and an object keeps its type.

    Checked after the fork has been detected in the child (another instance was touched),
    while ``untouched`` has not been touched there yet.
    """
    touched = FileBackend("/a")
    untouched = FileBackend("/b")

    def child() -> dict[str, Any]:
        touched.path  # noqa: B018 - detection in the child happens here
        return {
            "subclasses": [cls.__qualname__ for cls in Backend.__subclasses__()],
            "file_subclasses": [cls.__qualname__ for cls in FileBackend.__subclasses__()],
            "type_before_touch": type(untouched) is FileBackend,
            "path": untouched.path,
            "type_after_touch": type(untouched) is FileBackend,
        }

    seen = run_in_child(child, route=fork_route)
    assert seen["subclasses"] == ["FileBackend"]
    assert seen["file_subclasses"] == [], "a class the program never defined appeared in the child"
    assert seen["type_before_touch"], "type(obj) changed in the child"
    assert seen["path"] == "/b" and seen["type_after_touch"]
