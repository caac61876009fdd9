"""Restore from a VM snapshot as a fork event: vmclock's generation counter and SnapStart.

No VM here restores from a snapshot, and no Lambda runs these tests, so the
device is faked: an ordinary file with ``struct vmclock_abi``'s layout
(include/uapi/linux/vmclock-abi.h), mapped shared by the library through
INHERIT_VMCLOCK and changed by the test the way a hypervisor would (sequence
count odd, counter, sequence count even). SnapStart's ``snapshot_restore_py`` is
faked the same way: a module with its ``register_after_restore``, whose hooks
the test calls. Everything else is the real library, on both backends and in
both implementations.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from support import run_case

MAGIC = 0x4B4C4356
FLAG_COUNTER_PRESENT = 1 << 8

pytestmark = [
    pytest.mark.linux,
    pytest.mark.parametrize("backend", ["", "getpid"], ids=["default-backend", "getpid-backend"]),
    pytest.mark.parametrize("pure", ["1", "0"], ids=["pure", "accelerated-if-built"]),
]


def fake_vmclock(
    path: Path,
    *,
    magic: int = MAGIC,
    version: int = 1,
    flags: int = FLAG_COUNTER_PRESENT,
    counter: int = 7,
    length: int = 4096,
) -> Path:
    page = bytearray(max(length, 112))
    struct.pack_into("<IIHH", page, 0, magic, 112, version, 0)
    struct.pack_into("<I", page, 12, 2)  # seq_count: even, no update in progress
    struct.pack_into("<Q", page, 24, flags)
    struct.pack_into("<Q", page, 104, counter)
    path.write_bytes(bytes(page[:length]))
    return path


# The hypervisor's side, in the case scripts: the file mapped shared, as the library maps it.
HYPERVISOR = r"""
import mmap, struct
_dev = open(os.environ["INHERIT_VMCLOCK"], "r+b")
page = mmap.mmap(_dev.fileno(), 0)

def set_seq(value):
    struct.pack_into("<I", page, 12, value)

def seq():
    return struct.unpack_from("<I", page, 12)[0]

def set_flags(value):
    struct.pack_into("<Q", page, 24, value)

def restore():  # a restore from a snapshot: the counter moves inside an update
    set_seq(seq() + 1)
    struct.pack_into("<Q", page, 104, struct.unpack_from("<Q", page, 104)[0] + 1)
    set_seq(seq() + 1)
"""


def env_for(device: Path, backend: str, pure: str) -> dict[str, str]:
    return {"INHERIT_VMCLOCK": str(device), "INHERIT_BACKEND": backend, "INHERIT_PURE_PYTHON": pure}


def check_implementation(out: dict[str, object], pure: str) -> None:
    if pure == "0" and not out["accelerated"]:
        pytest.skip(f"the accelerator is not built here: {out['accelerator']}")


EVERY_STATE_MOVES = (
    HYPERVISOR
    + r"""
import random, threading
from inherit import _runtime

class Conn(inherit.ForkLocal):
    def __init__(self):
        self.token = os.urandom(8).hex()

calls = []
inherit.after_fork(lambda: calls.append(inherit.generation()))
rng = inherit.Random()
conn = Conn()

@inherit.per_process_cache
def ident():
    return os.urandom(8)

kept = inherit.zero_on_fork(32)
kept[:] = b"k" * 32
zeroed = inherit.zero_on_fork(32, on_restore="zero")
zeroed[:] = b"z" * 32
big = inherit.zero_on_fork(10000, on_restore="zero")
big[:] = b"b" * 10000

out["accelerated"] = _runtime.accelerated
out["accelerator"] = _runtime.accelerator
out["detection"] = inherit.diagnostics()["restore_detection"]
g0 = inherit.generation()
token0, ident0 = conn.token, ident()
state0 = rng.getstate()
out["stable_without_restore"] = all(inherit.generation() == g0 for _ in range(1000))
restore()
g1 = inherit.generation()
out["moved"] = g1 != g0
out["stable_after"] = all(inherit.generation() == g1 for _ in range(1000))
out["hook_calls"] = len(calls)
out["forklocal_renewed"] = conn.token != token0
out["cache_renewed"] = ident() != ident0
out["random_reseeded"] = rng.getstate() != state0
out["kept"] = bytes(kept) == b"k" * 32
out["zeroed"] = bytes(zeroed) == bytes(32) and bytes(big) == bytes(10000)
out["on_restore"] = [kept.on_restore, zeroed.on_restore]
moves = 0
for _ in range(5):
    before = inherit.generation()
    restore()
    moves += inherit.generation() != before
    moves += inherit.generation() != inherit.generation()
out["one_move_per_restore"] = moves
out["hook_calls_after_six"] = len(calls)
# a fork still is one
gen = inherit.generation()
moved = lambda: inherit.generation() != gen
out["fork_moves"] = {r: run_in_child(moved, route=r, timeout=30) for r in ROUTES}
"""
)


def test_a_restore_moves_every_per_process_state_once(tmp_path: Path, backend: str, pure: str) -> None:
    device = fake_vmclock(tmp_path / "vmclock")
    out = run_case(EVERY_STATE_MOVES, env=env_for(device, backend, pure))
    check_implementation(out, pure)
    assert out["detection"] == f"vmclock {device}"
    assert out["stable_without_restore"] and out["moved"] and out["stable_after"], out
    assert out["hook_calls"] == 1, out
    assert out["forklocal_renewed"] and out["cache_renewed"] and out["random_reseeded"], out
    assert out["kept"], "a region with on_restore='keep' lost its bytes"
    assert out["zeroed"], "a region with on_restore='zero' kept its bytes after a restore"
    assert out["on_restore"] == ["keep", "zero"]
    assert out["one_move_per_restore"] == 5, out
    assert out["hook_calls_after_six"] == 6, out
    assert all(out["fork_moves"].values()), out


SEQLOCK_AND_FLAG = (
    HYPERVISOR
    + r"""
import struct
g0 = inherit.generation()
# mid-update: the counter moved, the sequence count is odd
set_seq(seq() + 1)
struct.pack_into("<Q", page, 104, 99)
out["moved_while_odd"] = any(inherit.generation() != g0 for _ in range(2000))
set_seq(seq() + 1)
g1 = inherit.generation()
out["moved_once_even"] = g1 != g0 and all(inherit.generation() == g1 for _ in range(100))
# the counter is not live: changes mean nothing
set_flags(0)
struct.pack_into("<Q", page, 104, 12345)
out["moved_without_flag"] = any(inherit.generation() != g1 for _ in range(2000))
set_flags(1 << 8)
out["moved_when_flag_returns"] = inherit.generation() != g1
"""
)


def test_no_restore_is_seen_mid_update_or_without_the_counter_flag(
    tmp_path: Path, backend: str, pure: str
) -> None:
    device = fake_vmclock(tmp_path / "vmclock")
    out = run_case(SEQLOCK_AND_FLAG, env=env_for(device, backend, pure))
    assert out == {
        "moved_while_odd": False,
        "moved_once_even": True,
        "moved_without_flag": False,
        "moved_when_flag_returns": False,
    }


THREADS = (
    HYPERVISOR
    + r"""
import threading
g0 = inherit.generation()
seen = [set() for _ in range(6)]
go = threading.Event()
stop = threading.Event()

def reader(mine):
    go.wait()
    while not stop.is_set():
        mine.add(inherit.generation())
    mine.add(inherit.generation())

threads = [threading.Thread(target=reader, args=(s,)) for s in seen]
for t in threads:
    t.start()
go.set()
import time
time.sleep(0.05)
restore()
time.sleep(0.05)
stop.set()
for t in threads:
    t.join(30)
g1 = inherit.generation()
out["moved"] = g1 != g0
out["values"] = sorted({len(s) for s in seen})
out["all_see_the_same_two"] = all(s <= {g0, g1} and g1 in s for s in seen)
"""
)


def test_threads_across_a_restore_see_one_new_value(tmp_path: Path, backend: str, pure: str) -> None:
    device = fake_vmclock(tmp_path / "vmclock")
    out = run_case(THREADS, env=env_for(device, backend, pure))
    assert out["moved"] and out["all_see_the_same_two"], out


UNAVAILABLE = r"""
from inherit import _runtime
if DROP:  # root reads any file: be nobody to meet EACCES
    # first what the first use imports: the installed package may be unreadable to nobody
    import inherit.backends, inherit.backends._restore, inherit.backends.madvise, inherit.backends.getpid
    os.setgid(65534)
    os.setuid(65534)
g = inherit.generation()
out["detection"] = _runtime.restore_detection  # what diagnostics() reports, without its imports
out["vmclock_mapped"] = _runtime._vmclock is not None
out["works"] = inherit.generation() == g and run_in_child(lambda: inherit.generation() != g, timeout=30)
"""


@pytest.mark.parametrize(
    "make, reason",
    [
        ("missing", "does not exist"),
        ("truncated", "truncated"),
        ("magic", "wrong magic"),
        ("version", "version 0"),
        ("flag", "no VM generation counter"),
        ("unreadable", "cannot open"),
        ("directory", "cannot map"),
    ],
)
def test_a_device_that_cannot_be_used_is_reported_not_available(
    tmp_path: Path, backend: str, pure: str, make: str, reason: str
) -> None:
    device = tmp_path / "vmclock"
    if make == "truncated":
        fake_vmclock(device, length=100)
    elif make == "magic":
        fake_vmclock(device, magic=0x12345678)
    elif make == "version":
        fake_vmclock(device, version=0)
    elif make == "flag":
        fake_vmclock(device, flags=0)
    elif make == "unreadable":
        fake_vmclock(device)
        device.chmod(0)
        tmp_path.chmod(0o755)
    elif make == "directory":
        device.mkdir()
    body = UNAVAILABLE.replace("DROP", str(make == "unreadable" and os.geteuid() == 0))
    out = run_case(body, env=env_for(device, backend, pure))
    assert out["detection"].startswith("not available: ") and reason in out["detection"], out
    assert not out["vmclock_mapped"] and out["works"], out


SNAPSTART = r"""
import types
hooks = []
sys.modules["snapshot_restore_py"] = types.SimpleNamespace(
    register_after_restore=hooks.append, register_before_snapshot=lambda f: None
)
calls = []
inherit.after_fork(lambda: calls.append(1))
kept = inherit.zero_on_fork(32)
kept[:] = b"k" * 32
zeroed = inherit.zero_on_fork(32, on_restore="zero")
zeroed[:] = b"z" * 32
rng = inherit.Random()
g0 = inherit.generation()
state0 = rng.getstate()
out["detection"] = inherit.diagnostics()["restore_detection"]
out["hooks"] = len(hooks)
for hook in hooks:
    hook()  # what the Lambda runtime does after restoring the snapshot
g1 = inherit.generation()
out["moved"] = g1 != g0 and inherit.generation() == g1
out["calls"] = len(calls)
out["kept"] = bytes(kept) == b"k" * 32
out["zeroed"] = bytes(zeroed) == bytes(32)
out["reseeded"] = rng.getstate() != state0
"""


def test_a_snapstart_restore_hook_is_a_restore(tmp_path: Path, backend: str, pure: str) -> None:
    env = {
        "INHERIT_VMCLOCK": "off",
        "INHERIT_BACKEND": backend,
        "INHERIT_PURE_PYTHON": pure,
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
    }
    out = run_case(SNAPSTART, env=env)
    assert out["detection"] == "AWS Lambda SnapStart after-restore hook", out
    assert out["hooks"] == 1 and out["moved"] and out["calls"] == 1, out
    assert out["kept"] and out["zeroed"] and out["reseeded"], out


NO_DEVICE = r"""
from inherit import _runtime
inherit.generation()
out["pid_now_is_getpid"] = _runtime._pid_now is os.getpid
out["vmclock"] = _runtime._vmclock is None
out["kernel_body"] = _runtime.kernel_wipes and not _runtime.accelerated and (
    "flag" in _runtime.generation.__code__.co_names
)
out["kernel_wipes"] = _runtime.kernel_wipes
out["accelerated"] = _runtime.accelerated
"""


def test_without_a_device_the_fast_path_is_the_one_it_was(tmp_path: Path, backend: str, pure: str) -> None:
    out = run_case(NO_DEVICE, env=env_for(tmp_path / "absent", backend, pure))
    assert out["pid_now_is_getpid"] and out["vmclock"], out
    if out["kernel_wipes"] and not out["accelerated"]:
        assert out["kernel_body"], "the kernel backend's generation() lost its one-byte check"


FORK_MID_UPDATE = (
    HYPERVISOR
    + r"""
import struct
region = inherit.keep_on_fork(inherit.zero_on_fork(16, on_restore="zero"))
region[:] = b"K" * 16
g0 = inherit.generation()

def child():
    g1 = inherit.generation()  # the fork is detected mid-update
    set_seq(seq() + 1)  # the update completes
    g2 = inherit.generation()
    return {"restore_seen": g2 != g1, "region_zeroed": bytes(region) == bytes(16)}

out["child"] = {}
for i, route in enumerate(ROUTES):  # each child completes the update: begin a new one for the next
    set_seq(seq() + 1)  # an update begins...
    struct.pack_into("<Q", page, 104, 100 + i)  # ...and the counter has moved: a restore
    out["child"][route] = run_in_child(child, route=route, timeout=30)
"""
)


def test_a_fork_during_an_update_still_sees_the_restore_once_it_completes(
    tmp_path: Path, backend: str, pure: str
) -> None:
    device = fake_vmclock(tmp_path / "vmclock")
    out = run_case(FORK_MID_UPDATE, env=env_for(device, backend, pure))
    for route, seen in out["child"].items():
        assert seen == {"restore_seen": True, "region_zeroed": True}, (route, seen)


SNAPSTART_AND_VMCLOCK = (
    HYPERVISOR
    + r"""
import types
hooks, before = [], []
sys.modules["snapshot_restore_py"] = types.SimpleNamespace(
    register_after_restore=hooks.append, register_before_snapshot=before.append
)
calls = []
inherit.after_fork(lambda: calls.append(1))
g0 = inherit.generation()
out["detection"] = inherit.diagnostics()["restore_detection"]
for hook in before:
    hook()  # the snapshot is taken
restore()
if EARLY_CALL:
    inherit.generation()  # something calls in before the runtime runs its hooks
for hook in hooks:
    hook()
g1 = inherit.generation()
out["calls"] = len(calls)
out["moved"] = g1 != g0
"""
)


@pytest.mark.parametrize("early_call", [True, False], ids=["called-before-the-hook", "hook-first"])
def test_vmclock_and_snapstart_together_give_one_event_per_restore(
    tmp_path: Path, backend: str, pure: str, early_call: bool
) -> None:
    device = fake_vmclock(tmp_path / "vmclock")
    env = {**env_for(device, backend, pure), "AWS_LAMBDA_FUNCTION_NAME": "fn"}
    out = run_case(SNAPSTART_AND_VMCLOCK.replace("EARLY_CALL", str(early_call)), env=env)
    assert out["detection"] == f"vmclock {device}; AWS Lambda SnapStart after-restore hook", out
    assert out["moved"] and out["calls"] == 1, out


THREADS_WIDENED = (
    HYPERVISOR
    + r"""
import threading, time
from inherit import _runtime as rt
calls = []
inherit.after_fork(lambda: calls.append(1))
inherit.generation()
# Widen the instant between publishing the new lock word and the new lock table: a
# thread switch there must not let a second thread publish the same restore again.
target = rt._publish.__code__
marker = "_locks = {(pid, _lock_word()): mine}"
line = next(i for i, text in enumerate(open(rt.__file__), 1) if marker in text)

def tracer(frame, event, arg):
    if frame.f_code is not target:
        return None
    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == line:
            time.sleep(0.002)
        return local
    return local

threading.settrace(tracer)
sys.settrace(tracer)
stop = [False]

def reader():
    while not stop[0]:
        inherit.generation()

threads = [threading.Thread(target=reader) for _ in range(3)]
sys.setswitchinterval(1e-6)
for t in threads:
    t.start()
for _ in range(60):
    restore()
    time.sleep(0.003)
stop[0] = True
for t in threads:
    t.join(30)
out["calls"] = len(calls)
"""
)


def test_threads_never_publish_one_restore_twice(tmp_path: Path, backend: str, pure: str) -> None:
    device = fake_vmclock(tmp_path / "vmclock")
    out = run_case(THREADS_WIDENED, env=env_for(device, backend, pure), timeout=120)
    # Never more events than restores. Fewer happen only when no thread called in between two
    # restores (a loaded machine can starve the readers for 3 ms): two bumps then look like one.
    assert 30 <= out["calls"] <= 60, out
