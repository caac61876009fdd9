"""``ForkLocal``: like ``threading.local``, but per process.

Steady state: an attribute read checks the fork flag and nothing else. When a
new process is detected, every live instance (tracked weakly) loses its
attributes at once; instances whose class has an ``__init__`` are marked
pending, and until none is left ``ForkLocal`` itself carries hooks that check
that mark, so the first touch of each re-runs ``__init__``. Types never
change and no class is created, so ``type(obj)`` and ``__subclasses__()``
look the same in every process.
"""

from __future__ import annotations

from _thread import RLock, allocate_lock, get_ident
from _weakref import ref

from . import _detect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_getattribute = object.__getattribute__
_setattr = object.__setattr__
_delattr = object.__delattr__
_set_type_attribute = type.__setattr__

# Replaced by _detect.install() with the wipe-on-fork flag; zero means "check".
_flag: bytearray | memoryview = bytearray(1)

# Live instances, weakly: id -> weak reference that removes itself on death.
# (A dict of refs rather than weakref.WeakSet: importing weakref costs more.)
_instances: dict[int, ref[ForkLocal]] = {}
# ids of instances whose __init__ must run again on their next touch.
_pending: set[int] = set()
_pending_lock = allocate_lock()


class ForkLocal:
    """Attributes that vanish in a forked child.

    Shared by all threads of one process. In a child made by any route, the
    attributes are gone; if a subclass defines ``__init__``, it runs again
    there, once, with the original arguments, on the first touch (read, write
    or delete). Instances are tracked weakly and die like any other object.
    """

    __slots__ = (
        "__dict__",
        "__weakref__",
        "_forklocal_args",
        "_forklocal_lock",
        "_forklocal_owner",
        "_forklocal_pending",
    )

    def __init_subclass__(cls, /, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__basicsize__ != ForkLocal.__basicsize__ or cls.__itemsize__:
            # Only the instance __dict__ is cleared in a child; slots would keep
            # the parent's values.
            raise TypeError(f"ForkLocal subclass {cls.__qualname__} cannot add __slots__")

    def __new__(cls, /, *args: Any, **kwargs: Any) -> Any:
        if (args or kwargs) and cls.__init__ is object.__init__:
            raise TypeError(f"{cls.__name__}() takes no arguments unless it defines __init__")
        _detect.generation()  # settle any pending fork before this instance exists
        self = object.__new__(cls)
        _set_args(self, (args, kwargs))
        _set_lock(self, None)
        _set_owner(self, None)
        _set_pending(self, False)
        key = id(self)

        def forget(_: object, key: int = key) -> None:
            _forget(key)

        _instances[key] = ref(self, forget)
        return self

    def __getattribute__(self, name: str) -> Any:
        if _flag[0]:
            try:
                return _getattribute(self, name)
            except AttributeError:
                # The fork may have been detected after the flag check, clearing
                # the attributes: then this is a first touch after all.
                if not _get_pending(self):
                    raise
        else:
            _detect.generation()
        if _get_pending(self):
            _renew(self)
        return _getattribute(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # A write must land after __init__ has run again, not be overwritten by it.
        if not _flag[0] or _get_pending(self):
            _detect.generation()
            if _get_pending(self):
                _renew(self)
        _setattr(self, name, value)

    def __delattr__(self, name: str) -> None:
        if not _flag[0] or _get_pending(self):
            _detect.generation()
            if _get_pending(self):
                _renew(self)
        _delattr(self, name)

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot pickle {type(self).__name__}: its state belongs to one process")


_fast_getattribute = ForkLocal.__dict__["__getattribute__"]
_args_slot = ForkLocal.__dict__["_forklocal_args"]
_get_args = _args_slot.__get__
_set_args = _args_slot.__set__
_lock_slot = ForkLocal.__dict__["_forklocal_lock"]
_get_lock = _lock_slot.__get__
_set_lock = _lock_slot.__set__
_owner_slot = ForkLocal.__dict__["_forklocal_owner"]
_get_owner = _owner_slot.__get__
_set_owner = _owner_slot.__set__
_pending_slot = ForkLocal.__dict__["_forklocal_pending"]
_get_pending = _pending_slot.__get__
_set_pending = _pending_slot.__set__


def _checking_getattribute(self: ForkLocal, name: str) -> Any:
    """Installed on ForkLocal while some instance still has to re-initialise."""
    if not _flag[0]:
        _detect.generation()
    if _get_pending(self):
        _renew(self)
    return _getattribute(self, name)


def _set_hooks(checking: bool) -> None:
    hook = _checking_getattribute if checking else _fast_getattribute
    _set_type_attribute(ForkLocal, "__getattribute__", hook)


def _settled(key: int) -> None:
    """``key`` needs no re-initialisation any more; drop the checks when none does."""
    with _pending_lock:
        _pending.discard(key)
        if not _pending:
            _set_hooks(checking=False)


def _forget(key: int) -> None:
    _instances.pop(key, None)
    if key in _pending:
        _settled(key)


_discarded: list[dict[str, Any]] = []


def _on_new_process() -> None:
    """New process: attributes go now; ``__init__`` runs again on the next touch.

    Clearing here, not at the next touch, means a thread that was already past
    the flag check when the fork was detected finds nothing rather than the
    parent's values. The old values are dropped later, outside the detection
    lock, so their finalizers cannot deadlock on it.
    """
    global _pending_lock
    _pending_lock = allocate_lock()  # the parent's may have been held at the fork
    pending = set()
    for key, weak in list(_instances.items()):
        obj = weak()
        if obj is None:
            continue
        # A lock of this process's own (the parent's may have been held).
        _set_lock(obj, RLock())
        _set_owner(obj, None)
        attributes = _getattribute(obj, "__dict__")
        if attributes:
            _discarded.append(attributes.copy())
            attributes.clear()
        if type(obj).__init__ is not object.__init__:
            _set_pending(obj, True)
            pending.add(key)
    with _pending_lock:
        _pending.clear()
        _pending.update(pending)
        _set_hooks(checking=bool(_pending))


def _renew(self: ForkLocal) -> None:
    lock = _get_lock(self)
    if lock is None:  # pragma: no cover - every pending instance got one
        return
    with lock:
        if not _get_pending(self):
            return  # another thread finished first
        me = get_ident()
        if _get_owner(self) == me:
            return  # this thread's own __init__ touching its attributes
        args, kwargs = _get_args(self)
        _set_owner(self, me)
        try:
            type(self).__init__(self, *args, **kwargs)
        except BaseException:
            # A failed attempt leaves nothing behind; the next touch retries.
            _getattribute(self, "__dict__").clear()
            raise
        finally:
            _set_owner(self, None)
        _set_pending(self, False)
    _settled(id(self))


def _install(flag: bytearray | memoryview) -> None:
    global _flag
    _flag = flag


def _drop_discarded() -> None:
    while _discarded:
        _discarded.pop()


_detect.on_new_process.append(_on_new_process)
_detect.after_new_process.append(_drop_discarded)
_detect.on_install.append(_install)
