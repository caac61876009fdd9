"""``ForkLocal``: like ``threading.local``, but per process.

Fast path: one read of the fork flag, then the ordinary attribute lookup. No
per-instance stamp is compared; instead, when a new process is detected,
every live instance (tracked in a WeakSet) is switched to a "pending" twin
class whose first touch clears the attributes and re-runs ``__init__``.
"""

from __future__ import annotations

from _thread import RLock, get_ident
from _weakref import ref
TYPE_CHECKING = False

from . import _detect

if TYPE_CHECKING:
    from typing import Any

_getattribute = object.__getattribute__
_setattr = object.__setattr__
_delattr = object.__delattr__
_type = type

# Replaced by _detect.install() with the wipe-on-fork flag; zero means "check".
_flag: bytearray | memoryview = bytearray(1)

# Live instances, weakly: id -> weak reference that removes itself on death.
# (A dict of refs rather than weakref.WeakSet: importing weakref costs more.)
_instances: dict[int, ref[ForkLocal]] = {}
_pending_of: dict[type, type] = {}  # real class -> pending twin
_real_of: dict[type, type] = {}  # pending twin -> real class


class ForkLocal:
    """Attributes that vanish in a forked child.

    Shared by all threads of one process. In a child made by any route, the
    first touch finds the attributes gone; if a subclass defines
    ``__init__``, it runs again there, once, with the original arguments.
    Instances are tracked weakly and die like any other object.
    """

    __slots__ = ("__dict__", "__weakref__", "_forklocal_args", "_forklocal_lock", "_forklocal_owner")

    def __init_subclass__(cls, /, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__basicsize__ != ForkLocal.__basicsize__ or cls.__itemsize__:
            # Stale instances switch to a twin class, which needs the same layout.
            raise TypeError(f"ForkLocal subclass {cls.__qualname__} cannot add __slots__")

    def __new__(cls, /, *args: Any, **kwargs: Any) -> Any:
        if (args or kwargs) and cls.__init__ is object.__init__:
            raise TypeError(f"{cls.__name__}() takes no arguments unless it defines __init__")
        _detect.generation()  # settle any pending fork before this instance exists
        self = object.__new__(cls)
        _set_args(self, (args, kwargs))
        _set_lock(self, None)
        _set_owner(self, None)
        key = id(self)
        _instances[key] = ref(self, lambda _, key=key: _forget(key))
        return self

    def __getattribute__(self, name: str) -> Any:
        if _flag[0]:
            try:
                return _getattribute(self, name)
            except AttributeError:
                # Perhaps the fork was detected (attributes cleared) after the
                # flag check: then this is a first touch after all.
                if _type(self) not in _real_of:
                    raise
        else:
            _detect.generation()  # may turn this instance pending
        if _type(self) in _real_of:
            _renew(self)
        return _getattribute(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Writes also check the class: one made after the fork was detected must
        # land after __init__ has run again, not be overwritten by it.
        if not _flag[0] or _type(self) in _real_of:
            _detect.generation()
            if _type(self) in _real_of:
                _renew(self)
        _setattr(self, name, value)

    def __delattr__(self, name: str) -> None:
        if not _flag[0] or _type(self) in _real_of:
            _detect.generation()
            if _type(self) in _real_of:
                _renew(self)
        _delattr(self, name)

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot pickle {type(self).__name__}: its state belongs to one process")


def _forget(key: int) -> None:
    _instances.pop(key, None)
    if not _instances:
        _instances.clear()  # frees the table a crowd of instances left behind


_args_slot = ForkLocal.__dict__["_forklocal_args"]
_get_args = _args_slot.__get__
_set_args = _args_slot.__set__
_lock_slot = ForkLocal.__dict__["_forklocal_lock"]
_get_lock = _lock_slot.__get__
_set_lock = _lock_slot.__set__
_owner_slot = ForkLocal.__dict__["_forklocal_owner"]
_get_owner = _owner_slot.__get__
_set_owner = _owner_slot.__set__


def _pending_getattribute(self: ForkLocal, name: str) -> Any:
    _renew(self)
    return _getattribute(self, name)


def _pending_setattr(self: ForkLocal, name: str, value: Any) -> None:
    _renew(self)
    _setattr(self, name, value)


def _pending_delattr(self: ForkLocal, name: str) -> None:
    _renew(self)
    _delattr(self, name)


class _PendingBase(ForkLocal):
    """Where twins are born: subclassing ForkLocal runs no user class hook."""

    __slots__ = ()


def _pending_class(real: type) -> type:
    twin = _pending_of.get(real)
    if twin is None:
        # Same layout (empty __slots__), so __class__ can be switched both ways.
        twin = _type(
            real.__name__,
            (_PendingBase,),
            {
                "__slots__": (),
                "__module__": real.__module__,
                "__qualname__": real.__qualname__,
                "__getattribute__": _pending_getattribute,
                "__setattr__": _pending_setattr,
                "__delattr__": _pending_delattr,
            },
        )
        # Rebasing (unlike creating a subclass) never calls the user's
        # __init_subclass__, which may need arguments or have side effects.
        twin.__bases__ = (real,)
        _real_of[twin] = real
        _pending_of[real] = twin
    return twin


_discarded: list[dict[str, Any]] = []


def _mark_all_pending() -> None:
    """New process: attributes go now; ``__init__`` runs again on the next touch.

    Clearing here, not at the next touch, means a thread that was already past
    the flag check when the fork was detected finds nothing rather than the
    parent's values. The old values are dropped later, outside the detection
    lock, so their finalizers cannot deadlock on it.
    """
    for weak in list(_instances.values()):
        obj = weak()
        if obj is None:
            continue
        # A lock that belongs to this process (the parent's may have been held),
        # set before the class switch that makes anyone use it.
        _set_lock(obj, RLock())
        attributes = _getattribute(obj, "__dict__")
        if attributes:
            _discarded.append(attributes.copy())
            attributes.clear()
        cls = _type(obj)
        if cls not in _real_of:
            _setattr(obj, "__class__", _pending_class(cls))


def _renew(self: ForkLocal) -> None:
    with _get_lock(self):
        cls = _type(self)
        real = _real_of.get(cls)
        if real is None:
            return  # another thread finished first
        me = get_ident()
        if _get_owner(self) == me:
            return  # this thread's own __init__ touching its attributes
        init = real.__init__
        if init is not object.__init__:
            args, kwargs = _get_args(self)
            _set_owner(self, me)
            try:
                init(self, *args, **kwargs)
            except BaseException:
                # A failed attempt leaves nothing behind; the next touch retries.
                _getattribute(self, "__dict__").clear()
                raise
            finally:
                _set_owner(self, None)
        _setattr(self, "__class__", real)


def _install(flag: bytearray | memoryview) -> None:
    global _flag
    _flag = flag


def _drop_discarded() -> None:
    while _discarded:
        _discarded.pop()


_detect.on_new_process.append(_mark_all_pending)
_detect.after_new_process.append(_drop_discarded)
_detect.on_install.append(_install)
