"""Restore detection: a VM resumed from a snapshot is a fork of the whole machine.

Two sources, both optional:

- Linux vmclock (drivers/ptp/ptp_vmclock.c, 6.13+): ``/dev/vmclock0`` is a
  read-only page holding ``struct vmclock_abi`` (include/uapi/linux/vmclock-abi.h).
  Its ``vm_generation_counter`` changes on every restore from a snapshot, as
  long as ``flags`` has VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT. The page is mapped
  once; the runtime compares the counter's 8 bytes with the ones last seen.
- AWS Lambda SnapStart: ``snapshot_restore_py.register_after_restore``.

``INHERIT_VMCLOCK=PATH`` names another file with the same layout (tests, unusual
device paths); ``INHERIT_VMCLOCK=off`` turns vmclock detection off.
"""

import mmap
import os

from . import VMCLOCK_DEVICE, VMCLOCK_ENV_VAR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

ENV_VAR = VMCLOCK_ENV_VAR

# struct vmclock_abi (little-endian)
MAGIC = 0x4B4C4356  # "VCLK"
OFFSET_MAGIC = 0
OFFSET_SIZE = 4
OFFSET_VERSION = 8
OFFSET_SEQ = 12
OFFSET_FLAGS = 24
OFFSET_COUNTER = 104
COUNTER_END = OFFSET_COUNTER + 8
FLAG_VM_GEN_COUNTER_PRESENT = 1 << 8


class VMClock:
    """A mapped vmclock page: where the counter is, and how to read it consistently."""

    __slots__ = ("counter", "mem", "path", "seq")

    def __init__(self, path: str, mem: mmap.mmap) -> None:
        self.path = path
        self.mem = mem
        view = memoryview(mem)
        self.counter = view[OFFSET_COUNTER:COUNTER_END]  # compared as bytes: no allocation
        self.seq = view[OFFSET_SEQ : OFFSET_SEQ + 4]

    def updating(self) -> bool:
        """True while the hypervisor is writing the page (an odd sequence count)."""
        return bool(self.seq[0] & 1)

    def counter_present(self) -> bool:
        return bool(
            int.from_bytes(self.mem[OFFSET_FLAGS : OFFSET_FLAGS + 8], "little") & FLAG_VM_GEN_COUNTER_PRESENT
        )

    def read_counter(self) -> "bytes | None":
        """The counter's bytes read under the sequence lock; None while an update is in progress."""
        for _ in range(100):  # a hypervisor's update takes microseconds; never spin long
            before = int.from_bytes(self.seq, "little")
            if before & 1:
                continue
            value = bytes(self.counter)
            present = self.counter_present()
            if int.from_bytes(self.seq, "little") == before:
                return value if present else None
        return None


def open_vmclock(environ: "dict[str, str] | os._Environ[str] | None" = None) -> "tuple[VMClock | None, str]":
    """The mapped page and a description, or None and why restore detection by vmclock is off."""
    env = os.environ if environ is None else environ
    requested = env.get(ENV_VAR, "").strip()
    if requested.lower() in ("off", "0", "none"):
        return None, f"not available: {ENV_VAR}={requested}"
    if requested:
        path = requested
    elif VMCLOCK_DEVICE is not None:
        path = VMCLOCK_DEVICE
    else:
        return None, "not available: vmclock is a Linux device"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, f"not available: {path} does not exist"
    except OSError as exc:
        return None, f"not available: cannot open {path}: {exc.strerror or exc}"
    try:
        try:
            size = os.fstat(fd).st_size
            import stat

            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            if regular and size < COUNTER_END:
                return None, f"not available: {path} is truncated ({size} bytes, needs {COUNTER_END})"
            length = size if regular else mmap.PAGESIZE
            mem = mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except (OSError, ValueError) as exc:
            return None, f"not available: cannot map {path}: {getattr(exc, 'strerror', None) or exc}"
    finally:
        os.close(fd)
    reason = _invalid(mem)
    if reason:
        mem.close()
        return None, f"not available: {path} {reason}"
    return VMClock(path, mem), f"vmclock {path}"


def _invalid(mem: mmap.mmap) -> str:
    if len(mem) < COUNTER_END:
        return f"is truncated ({len(mem)} bytes, needs {COUNTER_END})"
    magic = int.from_bytes(mem[OFFSET_MAGIC : OFFSET_MAGIC + 4], "little")
    if magic != MAGIC:
        return f"has the wrong magic ({magic:#010x}, not {MAGIC:#010x})"
    size = int.from_bytes(mem[OFFSET_SIZE : OFFSET_SIZE + 4], "little")
    if size < COUNTER_END:
        return f"declares a size of {size} bytes, too small for the generation counter"
    if int.from_bytes(mem[OFFSET_VERSION : OFFSET_VERSION + 2], "little") == 0:
        return "has version 0"
    flags = int.from_bytes(mem[OFFSET_FLAGS : OFFSET_FLAGS + 8], "little")
    if not flags & FLAG_VM_GEN_COUNTER_PRESENT:
        return "has no VM generation counter (VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT is clear)"
    return ""


def register_snapstart(before_snapshot: "Callable[[], None]", after_restore: "Callable[[], None]") -> str:
    """Register with Lambda SnapStart's runtime hooks, where they exist."""
    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return ""
    try:
        import snapshot_restore_py  # type: ignore[import-not-found]
    except ImportError:
        return ""
    register = getattr(snapshot_restore_py, "register_before_snapshot", None)
    if register is not None:
        register(before_snapshot)
    snapshot_restore_py.register_after_restore(after_restore)
    return "AWS Lambda SnapStart after-restore hook"
