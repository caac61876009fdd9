"""ForkLocal subclasses that try to slip past the rules.

The rules (no ``__slots__``, no ``__getattribute__``/``__setattr__``/``__delattr__``
override, ``__init__``'s arguments recorded for the rerun) are enforced by
ForkLocal's metaclass, so they hold for a base whose ``__init_subclass__`` does not
call ``super()``, for a hook assigned to the class after it was made, and for an
``__init__`` that comes from a plain mixin or is assigned later. Otherwise a child
would read the parent's attribute values, lose its own writes, or re-run
``__init__`` with the wrong arguments. Each case forks for real, by ``fork()`` from
C and by a raw ``clone``. Last, a renewal cut short by a signal handler's exception
at any instant is retried, never left empty.
"""

from __future__ import annotations

import sys

import pytest

from support import run_case

pytestmark = pytest.mark.parametrize("backend", ["", "getpid"], ids=["default-backend", "getpid-backend"])

ROUTES_HERE = r"""
KIDS = [r for r in ("libc.fork", "syscall.clone") if r in available_routes()]
"""

BYPASSES = (
    ROUTES_HERE
    + r"""
def forgets_super_then_getattribute():
    class Base(inherit.ForkLocal):
        def __init_subclass__(cls, **kwargs):
            pass  # forgets super().__init_subclass__(**kwargs)
    class Session(Base):
        def __getattribute__(self, name):
            return object.__getattribute__(self, name)
    return Session

def forgets_super_then_slots():
    class Base(inherit.ForkLocal):
        def __init_subclass__(cls, **kwargs):
            pass
    class Session(Base):
        __slots__ = ("token",)
    return Session

def getattribute_assigned_later():
    class Session(inherit.ForkLocal):
        pass
    Session.__getattribute__ = lambda self, name: object.__getattribute__(self, name)
    return Session

def setattr_assigned_later():
    class Session(inherit.ForkLocal):
        pass
    Session.__setattr__ = lambda self, name, value: object.__setattr__(self, name, value)
    return Session

for make in (forgets_super_then_getattribute, forgets_super_then_slots, getattribute_assigned_later,
             setattr_assigned_later):
    try:
        session = make()()
        session.token = "parent-secret"
    except TypeError as exc:  # refused with a clear error: also a right answer
        out[make.__name__] = {"refused": str(exc)}
        continue
    def reads_first():
        return getattr(session, "token", None)
    def writes_first():
        session.token = "child-token"
        return getattr(session, "token", None)
    out[make.__name__] = {
        route: [run_in_child(first, route=route, timeout=30) for first in (reads_first, writes_first)]
        for route in KIDS
    }
"""
)


def test_no_subclass_reads_the_parents_attributes_in_a_child(backend: str) -> None:
    out = run_case(BYPASSES, env={"INHERIT_BACKEND": backend}, timeout=120)
    assert len(out) == 4, out
    broken = []
    for case, result in out.items():
        if "refused" in result:
            continue
        for route, (seen, after_write) in result.items():
            if seen is not None:
                broken.append(f"{case}, {route}: the child read the parent's value {seen!r}")
            if after_write != "child-token":
                broken.append(f"{case}, {route}: the child's own write was lost ({after_write!r})")
    assert not broken, "\n".join(broken)


LOST_ARGUMENTS = (
    ROUTES_HERE
    + r"""
class Connection:  # a plain mixin that owns __init__
    def __init__(self, url="localhost:5432"):
        self.url = url

def init_from_a_mixin():
    class Pool(Connection, inherit.ForkLocal):
        def __new__(cls, *args, **kwargs):
            return super().__new__(cls)
    return Pool

def init_from_a_later_mixin():
    class Pool(inherit.ForkLocal, Connection):
        def __new__(cls, *args, **kwargs):
            return super().__new__(cls)
    return Pool

def init_assigned_later():
    class Pool(inherit.ForkLocal):
        def __new__(cls, *args, **kwargs):
            return super().__new__(cls)
    def __init__(self, url="localhost:5432"):
        self.url = url
    Pool.__init__ = __init__
    return Pool

def base_forgets_super():
    class Base(inherit.ForkLocal):
        def __init_subclass__(cls, **kwargs):
            pass
    class Pool(Base):
        def __new__(cls, *args, **kwargs):
            return super().__new__(cls)
        def __init__(self, url="localhost:5432"):
            self.url = url
    return Pool

for make in (init_from_a_mixin, init_from_a_later_mixin, init_assigned_later, base_forgets_super):
    try:
        pool = make()("db.prod:5432")
    except TypeError as exc:
        out[make.__name__] = {"refused": str(exc)}
        continue
    assert pool.url == "db.prod:5432"
    out[make.__name__] = {route: run_in_child(lambda: pool.url, route=route, timeout=30) for route in KIDS}
"""
)


def test_init_is_rerun_with_the_original_arguments_whatever_defines_it(backend: str) -> None:
    out = run_case(LOST_ARGUMENTS, env={"INHERIT_BACKEND": backend}, timeout=120)
    assert len(out) == 4, out
    broken = [
        f"{case}, {route}: the child's __init__ ran with {url!r}"
        for case, result in out.items()
        if "refused" not in result
        for route, url in result.items()
        if url != "db.prod:5432"
    ]
    assert not broken, "\n".join(broken)


INTERRUPTED_RENEWAL = r"""
import signal

class Interrupt(BaseException):
    pass

class Conn(inherit.ForkLocal):
    def __init__(self, i):
        self.i = i

conns = [Conn(i) for i in range(3000)]
armed = [False]

def on_alarm(signum, frame):
    if armed[0]:  # only while an instance is being touched, never in the harness
        raise Interrupt

signal.signal(signal.SIGALRM, on_alarm)

def child():
    signal.setitimer(signal.ITIMER_REAL, 20e-6, 30e-6)  # an interrupt every 30 microseconds
    interrupted = i = 0
    while i < len(conns):
        try:
            armed[0] = True
            conns[i].__class__  # the first touch in this process renews the instance
            armed[0] = False
            i += 1
        except Interrupt:
            armed[0] = False
            interrupted += 1  # the touch failed: the next one must renew it properly
        except RuntimeError:  # a handler re-entering the library: retry
            armed[0] = False
    signal.setitimer(signal.ITIMER_REAL, 0)
    broken = []
    for n, conn in enumerate(conns):
        try:
            if conn.i != n:
                broken.append(n)
        except AttributeError:
            broken.append(n)
    return interrupted, len(broken)

out.update({route: run_in_child(child, route=route, timeout=120) for route in ("libc.fork", "os.fork")})
"""


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="CPython 3.10 itself dies of SIGALRM under this interrupt rate, with or without the library",
)
def test_an_interrupted_renewal_is_retried_not_left_empty(backend: str) -> None:
    """A worker interrupted (SIGTERM, SIGINT) while its first touch of a ForkLocal re-runs
    ``__init__``: every later touch must see a complete instance."""
    out = run_case(INTERRUPTED_RENEWAL, env={"INHERIT_BACKEND": backend}, timeout=240)
    for route, (interrupted, _) in out.items():
        assert interrupted >= 100, f"{route}: too few interrupts landed: {interrupted}"
    empty = {route: broken for route, (_, broken) in out.items() if broken}
    assert not empty, f"instances left without their __init__ state, of 3000: {empty}"
