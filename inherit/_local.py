"""``ForkLocal``: like ``threading.local``, but per process."""

from __future__ import annotations

import threading
from typing import Any

from . import _detect

_getattribute = object.__getattribute__
_setattr = object.__setattr__
_delattr = object.__delattr__
_meta_lock = threading.Lock()


class ForkLocal:
    """Attributes that vanish in a forked child.

    Shared by all threads of one process. In a child made by any route, the
    first touch finds the attributes gone; if a subclass defines
    ``__init__``, it runs again there with the original arguments. Nothing
    global refers to instances, so they die like any other object.
    """

    __slots__ = ("__dict__", "__weakref__", "_forklocal_gen", "_forklocal_args", "_forklocal_lock", "_forklocal_owner")

    def __new__(cls, /, *args: Any, **kwargs: Any) -> Any:
        if (args or kwargs) and cls.__init__ is object.__init__:
            raise TypeError(f"{cls.__name__}() takes no arguments unless it defines __init__")
        self = object.__new__(cls)
        _set_args(self, (args, kwargs))
        _set_lock(self, None)
        _set_owner(self, None)
        _set_gen(self, _detect.generation())
        return self

    def __getattribute__(self, name: str) -> Any:
        if _get_gen(self) != _detect.generation():
            _renew(self)
        return _getattribute(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if _get_gen(self) != _detect.generation():
            _renew(self)
        _setattr(self, name, value)

    def __delattr__(self, name: str) -> None:
        if _get_gen(self) != _detect.generation():
            _renew(self)
        _delattr(self, name)

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot pickle {type(self).__name__}: its state belongs to one process")


_gen_slot = ForkLocal.__dict__["_forklocal_gen"]
_get_gen = _gen_slot.__get__
_set_gen = _gen_slot.__set__
_args_slot = ForkLocal.__dict__["_forklocal_args"]
_get_args = _args_slot.__get__
_set_args = _args_slot.__set__
_lock_slot = ForkLocal.__dict__["_forklocal_lock"]
_get_lock = _lock_slot.__get__
_set_lock = _lock_slot.__set__
_owner_slot = ForkLocal.__dict__["_forklocal_owner"]
_get_owner = _owner_slot.__get__
_set_owner = _owner_slot.__set__


def _instance_lock(self: ForkLocal, gen: int) -> threading.RLock:
    """A per-instance lock that is new in every process (never inherited held)."""
    with _meta_lock:
        entry = _get_lock(self)
        if entry is None or entry[0] != gen:
            entry = (gen, threading.RLock())
            _set_lock(self, entry)
        return entry[1]  # type: ignore[no-any-return]


def _renew(self: ForkLocal) -> None:
    gen = _detect.generation()
    with _instance_lock(self, gen):
        if _get_gen(self) == gen:
            return  # another thread got here first
        me = threading.get_ident()
        if _get_owner(self) == (gen, me):
            return  # this thread's __init__ touching its own attributes
        _getattribute(self, "__dict__").clear()
        init = type(self).__init__
        if init is not object.__init__:
            args, kwargs = _get_args(self)
            _set_owner(self, (gen, me))
            try:
                init(self, *args, **kwargs)
            finally:
                _set_owner(self, None)
        _set_gen(self, gen)


def _after_fork_in_child() -> None:
    global _meta_lock
    _meta_lock = threading.Lock()


if hasattr(__import__("os"), "register_at_fork"):
    __import__("os").register_at_fork(after_in_child=_after_fork_in_child)
