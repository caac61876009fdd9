"""The runtime: fork detection, backend selection, and what happens in a new process.

This module owns the fork-detection flag page, the generation, the chosen
backend, the process lock, the library's only ``os.register_at_fork``
registration, and the ordered steps run when a new process is detected. The
hot paths that read the flag (``generation()``, ``ForkLocal``, ``Random``,
``per_process_cache``) live here too, so they read one module's globals.

The flag is a byte in a page the kernel wipes in every child (madvise, minherit);
nonzero means "no fork since the state was published". With the getpid backend
the flag stays zero and the PID of record plays its part.

When a new process is detected (the flag reads zero, the PID changed,
``os.fork()``'s child hook ran, or a restore from a VM snapshot was seen: vmclock's
generation counter moved, or SnapStart's after-restore hook ran), the detecting thread:

1. pauses the cyclic GC, so no finalizer runs until the new state is complete;
2. takes this process's lock: one per (PID, lock word in the flag page), agreed
   through an atomic ``dict.setdefault``; the word reads zero in a child, so a child
   never waits for a lock that a vanished thread held at the fork, whatever route
   made it and even with its parent's PID;
3. re-checks (another thread may have finished), then runs the steps, in order:
   a. draw a fresh, unpredictable generation value;
   b. wipe lazily wiped memory (getpid backend, after a fork; the kernel did it otherwise);
   c. wipe memory marked zero on restore (after a restore: no kernel wipes a clone);
   d. reset the region slab's books;
   e. reset the ForkLocal and cache renewal books (instances are stale by
      generation, so nothing is done per instance: O(1) in their number);
   None of them runs user code or drops a reference;
4. publishes: the lock word, the generation, then the flag byte (or the PID of record);
5. releases the lock and resumes the GC;
6. runs the ``after_fork`` callbacks in registration order.

Step 3 is restartable: an exception (a signal handler's) anywhere before the
flag is set leaves nothing published, and the next call starts again. A call
made from a signal handler while its own thread is inside steps 2-4 raises
RuntimeError instead of waiting for itself.
"""

import _random
import gc
import os
import sys
from _thread import RLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from random import Random as _RandomBase
    from typing import Any, TypeVar

    from .backends import Selection

    F = TypeVar("F", bound=Callable[..., Any])

ENV_VAR = "INHERIT_BACKEND"
PURE_ENV_VAR = "INHERIT_PURE_PYTHON"


def _load_accelerator() -> "tuple[Any, str]":
    """The compiled fast paths, or None and why not. They mirror this module exactly."""
    if os.environ.get(PURE_ENV_VAR, "").strip() not in ("", "0"):
        return None, f"{PURE_ENV_VAR} is set"
    try:
        from . import _speedups
    except ImportError as exc:
        if getattr(exc, "name", None) == "inherit._speedups":
            return None, "inherit._speedups is not built in this install (pure-Python package)"
        return None, f"inherit._speedups cannot load here: {exc}"
    return _speedups, "inherit._speedups"


# The accelerator, when active, reads the state below through install() and publish().
_accel, accelerator = _load_accelerator()
accelerated = _accel is not None
REENTERED = (
    "inherit was called from a signal handler while the same thread was detecting a fork or "
    "choosing a backend; call it outside the handler, or retry"
)

# -- published state (read by the fast paths) -------------------------------------------------------
# Zero means "look closer". Until a kernel backend is installed it is a private
# zero byte, so the first call takes the slow path and chooses a backend.
flag: "bytearray | memoryview" = bytearray(1)
# This process's generation; 0 until the first use. Also the stamp that marks
# per-process state (ForkLocal attributes, Random seeds, caches) as current.
current_generation = 0
# The getpid backend's PID of record. Stays -1 with a kernel backend, so a
# child that shares its parent's PID (PID namespaces) can never match it.
pid_of_record = -1
_getpid = os.getpid
# What the getpid bodies of the hot paths compare with pid_of_record: os.getpid, or, with
# restore detection on, _pid_if_same_machine (which also answers for kernel backends).
_pid_now = os.getpid
installed = False
kernel_wipes = False
# Restore detection (backends/_restore.py): the mapped vmclock page, a view of its
# generation counter, and the counter's bytes when the state was published.
_vmclock: "Any" = None
_vm_counter: "Any" = None  # memoryview | None; compared with bytes
_vm_last = b""
_vm_at_snapshot = b""  # _vm_last when SnapStart took the snapshot
restore_detection = "not checked yet (the first use checks)"
# What the detection under way found: a fork (the kernel's or the library's wipe
# applies), a restore from a snapshot (the VM moved), or both.
forked = False
restored = False
# Set by os.fork()'s child hook ("fork") or the SnapStart hook ("restore").
_forced = ""
# Region reads settle first unless the kernel wipes and no restore can happen.
settle_on_read = True
# The lock of the process that published the state above.
lock = RLock()
# Keyed by (PID, the lock word): the word is in the flag page, so a child made by any route
# reads 0 there and never finds a lock of its parent's, even with its parent's PID.
_locks: "dict[tuple[int, int], RLock]" = {}

_selection: "Selection | None" = None  # what backends.select() chose
_gc_isenabled = gc.isenabled
_gc_disable = gc.disable
_gc_enable = gc.enable

# What a child inherited from its ancestors (ForkLocal attributes, cached values): kept
# unreachable and never finalized here, because finalizers could close a connection
# that the parent still uses. Their pages stay shared copy-on-write.
_inherited: "list[object]" = []


def generation() -> int:
    """A number that differs in every new process and is stable within one.

    Whatever made the child (``os.fork``, multiprocessing, ``fork()`` from C, raw
    ``fork``/``clone`` syscalls), its value is fresh and unpredictable, so it
    differs from its parent's, its siblings' and its own children's. Compare
    values only within one process. The first call chooses the backend.
    """
    if flag[0]:
        return current_generation
    return _detect()


if _accel is not None:
    generation = _accel.generation


def _generation_getpid() -> int:
    if _pid_now() == pid_of_record:
        return current_generation
    return _detect()


#: True if the calling thread holds the lock (same-thread re-entry must not wait for itself).
is_owned: "Callable[[RLock], bool]" = RLock._is_owned  # type: ignore[attr-defined]


def lock_for_this_pid() -> RLock:
    """This process's lock. A child never meets its parent's, so none is inherited held."""
    key = (_getpid(), _lock_word())
    mine = _locks.get(key)
    if mine is None:
        mine = _locks.setdefault(key, RLock())
    return mine


def _lock_word() -> int:
    """The word published beside the flag (0 in a new process): part of the lock's key."""
    return int.from_bytes(flag[8:16], "little") if kernel_wipes else 0


def settle() -> None:
    """Detect a fork now if one happened: what every entry point that touches per-process state runs first."""
    if not (flag[0] or _getpid() == pid_of_record) or (_vm_counter is not None and _vm_counter != _vm_last):
        _detect()


def _detect() -> int:
    """The slow path: choose the backend on first use, or settle a new process."""
    pause = _gc_isenabled()
    try:
        if pause:
            _gc_disable()
        while True:
            mine = lock_for_this_pid()
            if is_owned(mine):
                raise RuntimeError(REENTERED)
            with mine:
                if lock_for_this_pid() is not mine:
                    continue  # the lock word was published while this thread waited: use its lock
                new_process = _detect_locked(mine)
            break
    finally:
        if pause:
            _gc_enable()
    if new_process:
        _after_publish()
    return current_generation


def published() -> bool:
    """True when the published state belongs to this process (no fork, no restore since)."""
    if not (flag[0] if kernel_wipes else pid_of_record == _getpid()):
        return False
    return _vmclock is None or _same_machine()


def _same_machine() -> bool:
    """False once the VM generation counter moved (read under vmclock's sequence lock)."""
    if _vm_counter == _vm_last:
        return True
    value = _vmclock.read_counter()  # None: mid-update, or the counter is not live
    return value is None or value == _vm_last


def _pid_if_same_machine() -> int:
    """``_pid_now`` with restore detection on: -2, never a PID of record, once the VM moved."""
    if _vm_counter == _vm_last:
        if kernel_wipes:
            return pid_of_record if flag[0] else -2
        return _getpid()
    return -2


def _detect_locked(mine: RLock) -> bool:
    """Under the lock, GC paused: True if this call published a new process's state."""
    global forked, restored
    if not installed:
        from .backends import select

        _install(select(ENV_VAR))
        forked = restored = False
        _publish(mine)
        return False  # the first use in a process is not a fork
    if published():
        if _vm_counter is not None and _vm_counter != _vm_last and not _vmclock.updating():
            _adopt_dead_counter()
        return False
    forked = _forced == "fork" or (
        _forced != "restore" and not (flag[0] if kernel_wipes else pid_of_record == _getpid())
    )
    restored = _forced == "restore" or not (_vmclock is None or _same_machine())
    _publish(mine)
    return True


def _adopt_dead_counter() -> None:
    """The counter changed while its flag bit is clear: not a restore, but stop taking the slow path."""
    global _vm_last
    if _vmclock.read_counter() is None and not _vmclock.counter_present():
        _vm_last = bytes(_vm_counter)
        if _accel is not None:
            _accel.publish(current_generation, -1 if kernel_wipes else pid_of_record, _vm_last)


def _publish(mine: RLock) -> None:
    global \
        current_generation, \
        lock, \
        _locks, \
        pid_of_record, \
        _vm_last, \
        _forced, \
        _fork_in_progress, \
        _published_pid
    generation = _fresh_generation(current_generation)
    vm_now = _vm_last
    if _vmclock is not None:
        # Read before the steps: a restore during them (a snapshot taken mid-detection)
        # leaves the counter ahead of this value, so it is detected again, as its own event.
        vm_now = _vmclock.read_counter()
        if vm_now is None:
            # Mid-update: keep the last value, so the restore in progress is seen once the
            # sequence count is even again. Not live (flag clear): what the page holds now.
            vm_now = _vm_last if _vm_last and _vmclock.counter_present() else bytes(_vm_counter)
    for step in _steps:
        step()
    pid = _getpid()
    if kernel_wipes:
        # The lock word first, then the dict: a thread that read the old word and finds no
        # lock for it makes one, sees that it is not the current lock, and retries (_detect).
        # Both words name this lock while the word changes (a restore keeps the PID, and
        # threads are running): a thread that reads the new word before _locks is replaced
        # must not make a lock of its own and publish a second time.
        _locks[(pid, generation)] = mine
        flag[8:16] = generation.to_bytes(8, "little")  # nonzero: the generation never is 0
    _locks = {(pid, _lock_word()): mine}
    lock = mine
    current_generation = generation
    _forced = ""
    _fork_in_progress = False
    _published_pid = pid
    if _accel is not None:  # before the flag: see publish()
        _accel.publish(generation, -1 if kernel_wipes else pid, vm_now if _vmclock is not None else None)
    _vm_last = vm_now  # after the generation: a thread that sees this counter sees it too
    if kernel_wipes:
        flag[0] = 1  # last: other threads take the slow path until now
    else:
        pid_of_record = pid


def _fresh_generation(old: int) -> int:
    while True:
        try:
            value = int.from_bytes(os.urandom(8), "big") >> 2
        except OSError:  # no entropy source (a strict sandbox): still distinct, if predictable
            import time

            value = hash((old, _getpid(), time.monotonic_ns(), id(object()))) & ((1 << 62) - 1)
        if value and value != old:
            return value


def _after_publish() -> None:
    _run_hooks()


# -- new-process steps ----------------------------------------------------------------------------
#: The steps run when a new process is detected, in this order (see the module docstring).
STEP_ORDER = (
    "wipe lazily wiped memory",
    "wipe memory marked zero on restore",
    "reset the slab's books",
    "reset the renewal books",
)
_registered_steps: "dict[str, Callable[[], None]]" = {}
_steps: "tuple[Callable[[], None], ...]" = ()


def add_step(name: str, step: "Callable[[], None]") -> None:
    """Register ``step`` under one of STEP_ORDER's names; steps never run user code or drop references."""
    global _steps
    if name not in STEP_ORDER:
        raise ValueError(f"unknown new-process step {name!r}")
    _registered_steps[name] = step
    _steps = tuple(_registered_steps[n] for n in STEP_ORDER if n in _registered_steps)


# -- backend selection (done by backends.select(), on first use) -----------------------------------


def _install(selection: "Selection") -> None:
    global flag, installed, kernel_wipes, _selection
    if selection.page is not None:
        flag = memoryview(selection.page)  # type: ignore[arg-type]
        kernel_wipes = True
    _install_restore_detection()
    if not kernel_wipes or _vmclock is not None:
        _specialize_for_getpid()
    if _accel is not None:
        _accel.install(selection.page, 1 if kernel_wipes else 2, _detect, _make_current)
        _accel.set_vmclock(_vm_counter)
    _selection = selection
    installed = True


def _install_restore_detection() -> None:
    """Map vmclock's page if there is one, and register with SnapStart if it runs us."""
    global _vmclock, _vm_counter, _vm_last, _pid_now, restore_detection, settle_on_read
    from .backends import restore_detection_absent

    absent = restore_detection_absent()  # the usual case, answered without loading _restore
    if absent:
        restore_detection = absent
        settle_on_read = not kernel_wipes
        return
    from .backends import _restore

    vmclock, how = _restore.open_vmclock()
    if vmclock is not None:
        last = vmclock.read_counter()
        _vm_last = bytes(vmclock.counter) if last is None else last
        _vm_counter = vmclock.counter
        _vmclock = vmclock
        _pid_now = _pid_if_same_machine
    try:
        snapstart = _restore.register_snapstart(_before_snapshot, _after_restore)
    except Exception as exc:  # a broken hook module must not stop the first use
        snapstart = ""
        how += f"; SnapStart hook not registered: {exc}"
    if snapstart:
        how = snapstart if vmclock is None else f"{how}; {snapstart}"
    restore_detection = how
    settle_on_read = not kernel_wipes or vmclock is not None or bool(snapstart)


def _before_snapshot() -> None:
    global _vm_at_snapshot
    _vm_at_snapshot = _vm_last


def _after_restore() -> None:
    """SnapStart's after-restore hook: the snapshot's state belongs to no process any more.

    Where vmclock's counter is live too, the restore is its event: one restore, one
    event, whichever source a call notices first.
    """
    pause = _gc_isenabled()  # from the check to the force, as in the fork hook
    if pause:
        _gc_disable()
    try:
        if _vmclock is not None and _vmclock.counter_present():
            if _vm_counter != _vm_last:
                moved = True  # the counter moved: detect it as any call would
            elif _vm_at_snapshot and _vm_last != _vm_at_snapshot:
                return  # an earlier call already saw this restore through the counter
            else:
                moved = False
        else:
            moved = False
        if not moved:
            _force_detection("restore")
    finally:
        if pause:
            _gc_enable()
    _detect()


def _force_detection(kind: str) -> None:
    """Make the next check take the slow path and treat what it finds as ``kind``."""
    global pid_of_record, _forced
    _forced = kind
    if kernel_wipes:
        flag[0] = 0
    else:
        pid_of_record = -1
        if _accel is not None:
            _accel.publish(current_generation, -1, None if _vmclock is None else _vm_last)


def selection() -> "Selection":
    """The active selection, made on first call (raises ValueError or BackendUnavailable)."""
    if _selection is None:
        generation()
    assert _selection is not None
    return _selection


def backend_name() -> str:
    return selection().backend.name


def _specialize_for_getpid() -> None:
    """Give the hot paths their getpid bodies: one PID compare, no flag read that is always zero."""
    for function, variant in _GETPID_VARIANTS:
        _swap_body(function, variant.__code__)
    for wrapper_ref, code in _cache_bodies:
        wrapper = wrapper_ref()
        if wrapper is not None:
            _swap_body(wrapper, code)
    _cache_bodies.clear()


# -- the only at-fork registration ---------------------------------------------------------------------


# True from os.fork()'s before hook until the state is published again: a child inherits
# it set, and a detection there (the library used by code that ran before this module's
# after-fork hook: another hook, a finalizer) clears it.
_fork_in_progress = False
_published_pid = -1  # the PID of the process that last published the state


def _before_fork() -> None:
    global _fork_in_progress
    _fork_in_progress = True


def _after_fork_in_parent() -> None:
    global _fork_in_progress
    _fork_in_progress = False


def _at_fork_in_child() -> None:
    if not installed:
        return  # never choose a backend in a fork hook: that may fork
    # The GC is paused from the check to the force: a finalizer that detected this child in
    # between (3.10 allocates a frame per call) would otherwise be followed by a second detection.
    pause = _gc_isenabled()
    if pause:
        _gc_disable()
    try:
        if not _fork_in_progress and _published_pid == _getpid():
            # This child already detected itself (the library was used before this hook ran):
            # forcing again would make a second new process. A fork that ran no before hook
            # (uWSGI's --py-call-osafterfork) leaves the parent's PID here, and is forced.
            return
        # A new process, whatever the flag says (a verification that was fooled) and even
        # with the parent's PID (PID namespaces): nothing published belongs to it.
        _locks.clear()  # only this thread survived: no lock of the parent's may be waited for
        _force_detection("fork")
    finally:
        if pause:
            _gc_enable()
    try:
        _detect()  # eager: wipe and run the callbacks before the child's code runs
    except Exception as exc:
        _report(exc, "Exception ignored in inherit's fork handler", _at_fork_in_child)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_at_fork_in_child
    )


# -- after_fork callbacks --------------------------------------------------------------------------------


def _report(exc: BaseException, err_msg: str, obj: object) -> None:
    """Report an exception that must not propagate, the way CPython reports one in a finalizer.

    A hook someone installed gets an object with ``sys.UnraisableHookArgs``'s
    fields. CPython's default hook accepts only its own argument type, which
    cannot be built from Python, so its output is written here instead.
    """
    hook = sys.unraisablehook
    if hook is not sys.__unraisablehook__:
        try:
            hook(_unraisable_args(exc, err_msg, obj))
            return
        except Exception:
            pass
    import traceback

    try:
        print(f"{err_msg}: {obj!r}", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    except Exception:  # no usable stderr: nothing more can be done
        pass


def _unraisable_args(exc: BaseException, err_msg: str, obj: object) -> "Any":
    from types import SimpleNamespace

    return SimpleNamespace(
        exc_type=type(exc), exc_value=exc, exc_traceback=exc.__traceback__, err_msg=err_msg, object=obj
    )


class AfterFork:
    """A registered :func:`after_fork` callback. Calling the handle calls the callback."""

    __slots__ = ("__weakref__", "_func", "_self", "cancelled")

    def __init__(self, fn: "Callable[[], object]", weak: bool) -> None:
        self.cancelled = False
        self._self: object = None
        if weak:
            owner = getattr(fn, "__self__", None)
            func = getattr(fn, "__func__", None)
            if owner is None or func is None:
                raise TypeError("after_fork(weak=True) needs a bound method")
            from _weakref import ref

            self._self = ref(owner)
            self._func: Callable[..., object] = func
        else:
            self._func = fn

    @property
    def callback(self) -> "Callable[[], object] | None":
        """The callback, or None once a weakly held method's object is gone."""
        if self._self is None:
            return self._func
        owner = self._self()  # type: ignore[operator]
        return None if owner is None else self._func.__get__(owner)

    def cancel(self) -> None:
        """Unregister; idempotent."""
        self.cancelled = True
        try:
            _hooks.remove(self)
        except ValueError:
            pass

    def __call__(self) -> object:
        callback = self.callback
        if callback is None:
            raise ReferenceError("the object of this weakly held method is gone")
        return callback()

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<inherit.after_fork handle for {self._func!r}{' (weak)' if self._self else ''}{state}>"


_hooks: "list[AfterFork]" = []


def after_fork(fn: "Callable[[], object] | None" = None, /, *, weak: bool = False) -> "Any":
    """Run ``fn()`` once in every new process, whatever route made it.

    In an ``os.fork()`` child (and multiprocessing's fork context) it runs
    eagerly, before ``os.fork()`` returns there. After a fork that runs no Python
    hook (``fork()`` from C, raw syscalls, uWSGI workers) it runs when the fork is
    detected: on the first ``generation()``, ``ForkLocal``, ``Random``,
    ``per_process_cache`` or region use in the child, in the thread that made
    that call, before the call returns. Callbacks run in registration order,
    outside every library lock; one that raises is reported (through
    ``sys.unraisablehook``) and the others still run. They never run in the
    process that registered them, nor in processes started by ``exec``
    (spawn, forkserver, subprocess).

    Works as a decorator. Returns a handle: call ``handle.cancel()`` to
    unregister. ``weak=True`` holds a bound method weakly: the callback
    unregisters itself once its object is gone. Registering chooses the backend
    now (so that any later fork is seen).
    """
    if fn is None:
        return lambda f: after_fork(f, weak=weak)
    if not callable(fn):
        raise TypeError(f"after_fork() needs a callable, not {type(fn).__name__}")
    handle = AfterFork(fn, weak)
    generation()
    _hooks.append(handle)
    return handle


def _run_hooks() -> None:
    """Every callback once. An exception is reported, or, if it is not an Exception (a signal
    handler's KeyboardInterrupt, SystemExit), re-raised once the others have run."""
    started = current_generation
    pending: BaseException | None = None
    for handle in tuple(_hooks):
        if handle.cancelled:
            continue
        callback = handle.callback
        if callback is None:
            handle.cancel()
            continue
        try:
            callback()
        except Exception as exc:
            _report(exc, "Exception ignored in inherit.after_fork callback", callback)
        except BaseException as exc:
            if pending is None:
                pending = exc
        if generation() != started:
            # The callback forked and this is the new process: its own detection ran every callback.
            break
    if pending is not None:
        raise pending


# -- ForkLocal -----------------------------------------------------------------------------------------

_getattribute = object.__getattribute__
_setattr = object.__setattr__
_delattr = object.__delattr__
# Renewal of stale instances: one lock per process, so an __init__ that touches
# another stale instance can never deadlock against a thread doing the opposite.
_renew_lock = RLock()
_renewing: "set[int]" = set()
_PICKLE_MODES = ("refuse", "init")
_ACCESS_HOOKS = ("__getattribute__", "__setattr__", "__delattr__")
_ForkLocalBase: type = object if _accel is None else _accel.ForkLocalBase


class ForkLocalType(type):
    """The metaclass of :class:`ForkLocal`.

    It checks every subclass, whatever its bases' ``__init_subclass__`` do,
    refuses access hooks assigned to a class later, and wraps whichever
    ``__init__`` a class has (its own, a mixin's, or one assigned later) so the
    arguments of construction are kept for the rerun in a new process.
    Combine it with another metaclass by subclassing both.
    """

    def __new__(
        mcls,
        name: str,
        bases: "tuple[type, ...]",
        namespace: "dict[str, Any]",
        /,
        pickle: "str | None" = None,
        **kwargs: "Any",
    ) -> "ForkLocalType":
        cls = super().__new__(mcls, name, bases, namespace, **kwargs)
        if "ForkLocal" in globals():  # not ForkLocal itself
            _check_subclass(cls, pickle)
            _record_init_arguments(cls)
        return cls

    def __setattr__(cls, name: str, value: "Any") -> None:
        if name in _ACCESS_HOOKS:
            raise TypeError(_hook_refusal(cls, name))
        if name == "__init__" and callable(value):
            value = _recording_init(value)
        if name != "__bases__":
            super().__setattr__(name, value)
            return
        old = cls.__bases__
        super().__setattr__(name, value)
        try:
            _check_subclass(cls, None)
        except TypeError:
            super().__setattr__(name, old)
            raise
        _record_init_arguments(cls)


class ForkLocal(_ForkLocalBase, metaclass=ForkLocalType):  # type: ignore[misc]
    """Attributes that belong to one process, like ``threading.local`` for processes.

    Shared by all threads of one process. In a child made by any route the
    attributes are gone; if the class has an ``__init__``, it runs again there,
    once, with the arguments the instance was built with, on the first touch
    (read, write or delete). Other threads touching the instance meanwhile wait
    for it. Nothing is done per instance at the fork itself.

    The parent's attribute values are never finalized in the child (that could
    close a connection the parent still uses); they stay unreachable there.
    Subclasses cannot add ``__slots__`` or override ``__getattribute__``,
    ``__setattr__`` or ``__delattr__`` (nor inherit an override from a mixin):
    those would see the parent's values. Pickling is refused unless the class
    is declared with ``pickle="init"`` (``class Pool(ForkLocal, pickle="init")``):
    then unpickling builds a new instance from the original arguments on the
    receiving side.
    """

    __slots__: "tuple[str, ...]"
    if _accel is None:
        __slots__ = ("__dict__", "__weakref__", "_forklocal_args", "_forklocal_stamp")
    else:  # the compiled base has the slots and the access hooks
        __slots__ = ()

    _forklocal_pickle = "refuse"

    def __new__(cls, /, *args: "Any", **kwargs: "Any") -> "Any":
        if (args or kwargs) and cls.__init__ is object.__init__:
            raise TypeError(f"{cls.__name__}() takes no arguments unless it defines __init__")
        self = _new_instance(cls)
        _set_stamp(self, generation())
        _set_args(self, (args, kwargs))
        return self

    if _accel is None:

        def __getattribute__(self, name: str) -> "Any":
            if flag[0] and _get_stamp(self) is current_generation:
                return _getattribute(self, name)
            _make_current(self)
            return _getattribute(self, name)

        def __setattr__(self, name: str, value: "Any") -> None:
            if not (flag[0] and _get_stamp(self) is current_generation):
                _make_current(self)
            _setattr(self, name, value)

        def __delattr__(self, name: str) -> None:
            if not (flag[0] and _get_stamp(self) is current_generation):
                _make_current(self)
            _delattr(self, name)

    def __reduce__(self) -> "Any":
        cls = type(self)
        if cls._forklocal_pickle != "init":
            raise TypeError(
                f"cannot pickle {cls.__name__}: its state belongs to one process "
                f'(declare the class with pickle="init" to rebuild it from its arguments)'
            )
        args, kwargs = _get_args(self)
        return (_rebuild_forklocal, (cls, args, kwargs))


def _forklocal_getattribute_getpid(self: ForkLocal, name: str) -> "Any":
    if _pid_now() == pid_of_record and _get_stamp(self) is current_generation:
        return _getattribute(self, name)
    _make_current(self)
    return _getattribute(self, name)


def _forklocal_setattr_getpid(self: ForkLocal, name: str, value: "Any") -> None:
    if not (_pid_now() == pid_of_record and _get_stamp(self) is current_generation):
        _make_current(self)
    _setattr(self, name, value)


def _forklocal_delattr_getpid(self: ForkLocal, name: str) -> None:
    if not (_pid_now() == pid_of_record and _get_stamp(self) is current_generation):
        _make_current(self)
    _delattr(self, name)


# The class whose __dict__ holds the slots and the access hooks.
_HOOK_OWNER: type = ForkLocal if _accel is None else _ForkLocalBase
_new_instance: "Any" = object.__new__ if _accel is None else _ForkLocalBase.__new__
_get_stamp = _HOOK_OWNER.__dict__["_forklocal_stamp"].__get__
_set_stamp = _HOOK_OWNER.__dict__["_forklocal_stamp"].__set__
_get_args = _HOOK_OWNER.__dict__["_forklocal_args"].__get__
_set_args = _HOOK_OWNER.__dict__["_forklocal_args"].__set__
# Not object.__setattr__: CPython refuses it past a compiled base's own hook.
_get_dict = _HOOK_OWNER.__dict__["__dict__"].__get__
_set_dict = _HOOK_OWNER.__dict__["__dict__"].__set__


def _hook_refusal(cls: type, name: str) -> str:
    return (
        f"ForkLocal subclass {cls.__qualname__} cannot override {name}: attribute access "
        "is where ForkLocal notices a fork, and a bypass would see the parent's values"
    )


def _check_subclass(cls: type, pickle: "str | None") -> None:
    if cls.__basicsize__ != ForkLocal.__basicsize__ or cls.__itemsize__:
        # Only the instance __dict__ is per process; slots would keep the parent's values.
        raise TypeError(f"ForkLocal subclass {cls.__qualname__} cannot add __slots__")
    for name in _ACCESS_HOOKS:
        owner = next(klass for klass in cls.__mro__ if name in klass.__dict__)
        if owner is not _HOOK_OWNER:
            raise TypeError(_hook_refusal(cls, name))
    if pickle is not None:
        if pickle not in _PICKLE_MODES:
            raise ValueError(f'pickle must be "refuse" or "init", not {pickle!r}')
        type.__setattr__(cls, "_forklocal_pickle", pickle)


def _record_init_arguments(cls: type) -> None:
    init = cls.__init__  # type: ignore[misc]
    if init is not object.__init__ and not hasattr(init, "__forklocal_init__"):
        type.__setattr__(cls, "__init__", _recording_init(init))


def _recording_init(init: "Callable[..., None]") -> "Callable[..., None]":
    """Wrap an __init__ so the arguments of construction are kept for the rerun."""

    def __init__(self: ForkLocal, /, *args: "Any", **kwargs: "Any") -> None:
        if type(self).__init__ is __init__:  # the outermost call (not a super().__init__ call)
            _set_args(self, (args, kwargs))
        init(self, *args, **kwargs)

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(__init__, attr, getattr(init, attr, None))
    __init__.__dict__.update(getattr(init, "__dict__", {}))
    __init__.__wrapped__ = init  # type: ignore[attr-defined]
    __init__.__forklocal_init__ = True  # type: ignore[attr-defined]
    return __init__


def _make_current(self: ForkLocal) -> None:
    """Detect a fork first; if this instance belongs to an earlier process, renew it."""
    current = generation()
    if _get_stamp(self) is current:
        return
    key = id(self)
    renew_lock = _renew_lock
    nested = is_owned(renew_lock)  # an __init__ being re-run touches ForkLocals
    with renew_lock:
        if not nested:
            # No renewal can be in progress now: marks left here were left by one
            # that an exception (a signal handler's) cut short.
            _renewing.clear()
        if _get_stamp(self) is current_generation or key in _renewing:
            return  # renewed meanwhile, or this is its own __init__ touching it
        try:
            _renewing.add(key)
            _inherited.append(_get_dict(self))
            _set_dict(self, {})
            init = type(self).__init__
            if init is not object.__init__:
                args, kwargs = _get_args(self)
                init(self, *args, **kwargs)
        except BaseException:
            _set_dict(self, {})  # nothing half-built survives; the next touch retries
            raise
        finally:
            _renewing.discard(key)
        # Outside the try: an exception (a signal handler's) after this point must not
        # empty a dict that is complete and current. One landing just before it makes
        # the next touch run __init__ once more, which is the safe side.
        _set_stamp(self, current_generation)


def _rebuild_forklocal(
    cls: "type[ForkLocal]", args: "tuple[Any, ...]", kwargs: "dict[str, Any]"
) -> ForkLocal:
    rebuilt: ForkLocal = cls(*args, **kwargs)
    return rebuilt


def _reset_renewal_books() -> None:
    global _renew_lock, _renewing
    _renew_lock = RLock()  # the parent's may have been held by a thread that is gone
    _renewing = set()


add_step("reset the renewal books", _reset_renewal_books)


# -- Random ------------------------------------------------------------------------------------------------

_c_random = _random.Random.random
_c_getrandbits = _random.Random.getrandbits


class _RandomNotLoaded(_random.Random):
    """Stands in for ``random.Random`` until the ``random`` module is loaded.

    Importing ``random`` costs several milliseconds, so ``import inherit`` does
    not; the first use of :class:`Random` (or a subclass definition) re-bases it
    on ``random.Random``. The layouts match, so CPython allows the switch.
    """


if TYPE_CHECKING:
    _Base = _RandomBase
else:
    _Base = _RandomNotLoaded


class Random(_Base):
    """A ``random.Random`` that reseeds itself from ``os.urandom`` in every new process.

    Every drawing method goes through ``random()`` or ``getrandbits()``, which
    check first. Copies and pickles of a reseeding instance start a fresh
    stream of their own, so two processes never share one, whatever carried the
    instance there (fork, pickling to spawn or forkserver workers, a copy made
    before a fork). An instance seeded explicitly (``Random(42)``, ``seed(42)``,
    ``setstate(...)``) asked for a repeatable stream and keeps it: a forked
    child continues the same sequence and a copy repeats it, exactly like
    ``random.Random(42)``. ``seed()`` or ``seed(None)`` turns reseeding on again.
    """

    # Class defaults: a subclass whose __init__ skips super().__init__() still reseeds.
    _inherit_auto: bool = True
    _inherit_stamp: object = None

    def __init_subclass__(cls, /, **kwargs: "Any") -> None:
        _load_random()
        super().__init_subclass__(**kwargs)

    def __init__(self, x: "Any" = None) -> None:
        if _random_not_loaded():
            _load_random()
        super().__init__(x)

    def seed(self, a: "Any" = None, version: int = 2) -> None:
        if a is None:  # first: an interrupt below leaves it reseeding, never repeating a stream
            self._inherit_auto = True
        super().seed(a, version)
        self._inherit_auto = a is None  # after: an interrupt above leaves the old promise
        self._inherit_stamp = generation()

    def setstate(self, state: "tuple[Any, ...]") -> None:
        super().setstate(state)
        self._inherit_auto = False
        self._inherit_stamp = generation()

    def getstate(self) -> "tuple[Any, ...]":
        if not (flag[0] and self._inherit_stamp is current_generation):
            self._renew()
        return _base_getstate(self)

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        # gauss() keeps a cached second value: a child must not reuse the parent's.
        if not (flag[0] and self._inherit_stamp is current_generation):
            self._renew()
        return _base_gauss(self, mu, sigma)

    def random(self) -> float:
        if flag[0] and self._inherit_stamp is current_generation:
            return _c_random(self)
        self._renew()
        return _c_random(self)

    def getrandbits(self, k: int, /) -> int:
        if flag[0] and self._inherit_stamp is current_generation:
            return _c_getrandbits(self, k)
        self._renew()
        return _c_getrandbits(self, k)

    def _renew(self) -> None:
        current = generation()
        if self._inherit_stamp is not current:
            if self._inherit_auto:
                super().seed(None)  # also drops gauss()'s cached second value
            self._inherit_stamp = current

    @property
    def reseeds_on_fork(self) -> bool:
        """False once the instance was seeded explicitly."""
        return self._inherit_auto

    def __reduce__(self) -> "tuple[Any, ...]":
        extra = {k: v for k, v in self.__dict__.items() if k not in _RANDOM_KEYS}
        state = None if self._inherit_auto else super().getstate()
        return (_rebuild_random, (type(self),), (state, extra))

    def __setstate__(self, saved: "tuple[Any, ...]") -> None:
        state, extra = saved
        if state is None:
            self.seed()  # a fresh stream: this copy must not repeat the original's
        else:
            self.setstate(state)
        self.__dict__.update(extra)


if _accel is not None:
    # Method descriptors that check, then call the C methods they wrap: no Python frame per draw.
    _compiled = _accel.random_methods(Random, _random.Random, Random.random, Random.getrandbits)
    for _name, _method in zip(("random", "getrandbits"), _compiled, strict=True):
        type.__setattr__(Random, _name, _method)


def _random_random_getpid(self: Random) -> float:
    if _pid_now() == pid_of_record and self._inherit_stamp is current_generation:
        return _c_random(self)
    self._renew()
    return _c_random(self)


def _random_getrandbits_getpid(self: Random, k: int, /) -> int:
    if _pid_now() == pid_of_record and self._inherit_stamp is current_generation:
        return _c_getrandbits(self, k)
    self._renew()
    return _c_getrandbits(self, k)


def _random_getstate_getpid(self: Random) -> "tuple[Any, ...]":
    if not (_pid_now() == pid_of_record and self._inherit_stamp is current_generation):
        self._renew()
    return _base_getstate(self)


def _random_gauss_getpid(self: Random, mu: float = 0.0, sigma: float = 1.0) -> float:
    if not (_pid_now() == pid_of_record and self._inherit_stamp is current_generation):
        self._renew()
    return _base_gauss(self, mu, sigma)


# Methods of the base (random.Random once loaded), called without super(): a method
# that names super gets a closure cell, and its code could not be swapped for the
# getpid variant.
def _base_getstate(self: Random) -> "tuple[Any, ...]":
    return super(Random, self).getstate()


def _base_gauss(self: Random, mu: float, sigma: float) -> float:
    return super(Random, self).gauss(mu, sigma)


_RANDOM_KEYS = frozenset({"_inherit_auto", "_inherit_stamp", "gauss_next"})


def _random_not_loaded() -> bool:
    return Random.__bases__[0] is _RandomNotLoaded


def _load_random() -> None:
    import random

    if _random_not_loaded():
        Random.__bases__ = (random.Random,)


def _rebuild_random(cls: "type[Random]") -> Random:
    _load_random()
    rng: Random = _random.Random.__new__(cls)
    return rng


if "random" in sys.modules:  # already paid for: no reason to wait
    _load_random()


# -- per_process_cache ------------------------------------------------------------------------------------


def per_process_cache(maxsize: "Any" = 128, typed: bool = False) -> "Any":
    """``functools.lru_cache``, but every new process starts with an empty cache.

    The same surface as ``lru_cache``: ``@per_process_cache``,
    ``@per_process_cache(maxsize)``, ``maxsize`` and ``typed`` by keyword,
    ``cache_info()``, ``cache_clear()``, ``cache_parameters()``, ``__wrapped__``,
    and methods. Asked in a child, ``cache_info()`` describes the child's
    cache. The parent's cached values are never finalized in a child.
    """
    if isinstance(maxsize, int):
        if maxsize < 0:
            maxsize = 0
    elif callable(maxsize) and isinstance(typed, bool):
        return _cached(maxsize, 128, typed)
    elif maxsize is not None:
        raise TypeError("Expected first argument to be an integer, a callable, or None")

    def decorating_function(user_function: "F") -> "F":
        wrapper: F = _cached(user_function, maxsize, typed)
        return wrapper

    return decorating_function


def _cached(user_function: "Any", maxsize: "int | None", typed: bool) -> "Any":
    import functools

    lru = functools.lru_cache(maxsize=maxsize, typed=typed)
    if _accel is not None:
        return _accelerated_cache(functools, lru, user_function, maxsize, typed)
    cached = lru(user_function)
    # None until the first call: decorating (at import time, usually) chooses no backend.
    stamp: object = None

    def current() -> "Any":
        nonlocal cached, stamp
        now = generation()
        if stamp is not now:
            with _renew_lock:
                if stamp is None:
                    stamp = now  # the first call: the cache made at decoration is this process's
                elif stamp is not now:
                    _inherited.append(cached)
                    cached = lru(user_function)
                    stamp = now
        return cached

    def wrapper(*args: "Any", **kwargs: "Any") -> "Any":
        if flag[0] and stamp is current_generation:
            return cached(*args, **kwargs)
        return current()(*args, **kwargs)

    def wrapper_getpid(*args: "Any", **kwargs: "Any") -> "Any":
        if _pid_now() == pid_of_record and stamp is current_generation:
            return cached(*args, **kwargs)
        return current()(*args, **kwargs)

    functools.update_wrapper(wrapper, user_function)
    wrapper.cache_info = lambda: current().cache_info()  # type: ignore[attr-defined]
    wrapper.cache_clear = lambda: current().cache_clear()  # type: ignore[attr-defined]
    wrapper.cache_parameters = lambda: {"maxsize": maxsize, "typed": typed}  # type: ignore[attr-defined]
    if not installed:
        from _weakref import ref

        _cache_bodies.append((ref(wrapper), wrapper_getpid.__code__))
    elif not kernel_wipes or _vmclock is not None:
        _swap_body(wrapper, wrapper_getpid.__code__)
    return wrapper


# Pure-Python cache wrappers made before the backend was chosen, and their getpid bodies.
_cache_bodies: "list[tuple[Callable[[], Any], Any]]" = []


def _swap_body(function: "Any", code: "Any") -> None:
    """Give ``function`` the body ``code`` (same closure), keeping its names."""
    assert code.co_freevars == function.__code__.co_freevars
    replace = {"co_name": function.__code__.co_name}
    if sys.version_info >= (3, 11):
        replace["co_qualname"] = function.__code__.co_qualname
    function.__code__ = code.replace(**replace)


def _accelerated_cache(
    functools: "Any", lru: "Any", user_function: "Any", maxsize: "int | None", typed: bool
) -> "Any":
    """The same wrapper as _cached()'s, as a compiled object whose call checks the stamp."""

    def renew(wrapper: "Any") -> None:
        now = generation()
        if wrapper._stamp is not now:
            with _renew_lock:
                if wrapper._stamp is None:
                    wrapper._stamp = now  # the first call: the decoration's cache is this process's
                elif wrapper._stamp is not now:
                    _inherited.append(wrapper._cached)
                    wrapper._cached = lru(user_function)
                    wrapper._stamp = now

    # Stamp None until the first call: decorating chooses no backend.
    wrapper = _accel.CachedFunction(lru(user_function), None, renew)

    def current() -> "Any":
        renew(wrapper)
        return wrapper._cached

    functools.update_wrapper(wrapper, user_function)
    wrapper.cache_info = lambda: current().cache_info()
    wrapper.cache_clear = lambda: current().cache_clear()
    wrapper.cache_parameters = lambda: {"maxsize": maxsize, "typed": typed}
    return wrapper


# The Python hot paths and their getpid bodies (the compiled ones check either way).
_GETPID_VARIANTS: "tuple[tuple[Any, Any], ...]" = tuple(
    (function, variant)
    for function, variant in (
        (generation, _generation_getpid),
        (ForkLocal.__dict__.get("__getattribute__"), _forklocal_getattribute_getpid),
        (ForkLocal.__dict__.get("__setattr__"), _forklocal_setattr_getpid),
        (ForkLocal.__dict__.get("__delattr__"), _forklocal_delattr_getpid),
        (Random.__dict__["random"], _random_random_getpid),
        (Random.__dict__["getrandbits"], _random_getrandbits_getpid),
        (Random.__dict__["getstate"], _random_getstate_getpid),
        (Random.__dict__["gauss"], _random_gauss_getpid),
    )
    if hasattr(function, "__code__")
)

if _accel is not None:
    _accel.set_detector(_detect, _make_current)  # the slow paths the compiled checks call
