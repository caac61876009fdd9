"""Linux: ``madvise(MADV_WIPEONFORK)`` (4.14+) on private anonymous memory.

Values from ``include/uapi/asm-generic/mman-common.h``: WIPEONFORK 18,
KEEPONFORK 19. parisc used 71/72 up to 6.1 (``arch/parisc/include/uapi/asm/mman.h``);
newer parisc kernels accept both.

Verification reads the mapping's VmFlags in /proc/self/smaps: ``wf`` is what
the kernel recorded, whatever madvise() returned. Where smaps is unreadable, or
disagrees with a successful return (user-mode emulators print no ``wf``; a
seccomp filter may answer "success" for a call it dropped), a fork probe in a
helper process decides. No invalid advice is ever sent from the caller's process.
"""

import errno
import mmap
import os
import sys

from . import PAGE_SIZE, Backend, Verification, describe_oserror

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19
PARISC_MADV_WIPEONFORK = 71
PARISC_MADV_KEEPONFORK = 72
INVALID_ADVICE = -1

_HINTS = {
    errno.EINVAL: "kernel older than 4.14, or a sandbox such as gVisor that refuses it",
    errno.ENOSYS: "kernel built without CONFIG_ADVISE_SYSCALLS",
    errno.EPERM: "refused by a seccomp policy or sealed memory",
}


# -- /proc readers: where a new mapping is, and which VmFlags the kernel really set ---------------
# Return codes are not proof: a sandbox can answer "success" for a call that did
# nothing, while /proc/self/smaps shows what the kernel recorded for a mapping
# (``wf`` wipe-on-fork, ``dd`` excluded from core dumps, ``lo`` locked). Finding
# a mapping needs its address, which CPython's mmap does not expose; a diff of
# /proc/self/maps around the mmap() call gives it without cffi or ctypes (neither
# loads in an isolated subinterpreter). Secret pages and the probe's cache key
# use these too.

MAPS = "/proc/self/maps"
SMAPS = "/proc/self/smaps"


def _read(path: str) -> bytes | None:
    """The file's bytes, after a leading newline; None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    chunks = [b"\n"]
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _range(line: bytes) -> "tuple[int, int] | None":
    lo, dash, rest = line.partition(b"-")
    hi = rest.partition(b" ")[0]
    if not dash:
        return None
    try:
        return int(lo, 16), int(hi, 16)
    except ValueError:
        return None


def map_and_locate(make: "Callable[[], mmap.mmap]", size: int) -> "tuple[mmap.mmap, int | None]":
    """Call ``make()`` (an mmap of ``size`` bytes) and find the mapping's address.

    The address is None when /proc is unreadable or the diff is ambiguous (other
    threads mapped memory at the same moment); callers then fall back to
    another proof.
    """
    before = _read(MAPS)
    mem = make()
    if before is None:
        return mem, None
    after = _read(MAPS)
    if after is None:
        return mem, None
    old_lines = set(before.split(b"\n"))
    old = {line.partition(b" ")[0] for line in old_lines}  # b"lo-hi" of every old mapping
    found = set()
    for line in after.split(b"\n"):
        if line in old_lines:
            continue
        bounds = _range(line)
        if bounds is None:
            continue
        lo, hi = bounds
        if hi - lo == size:
            found.add(lo)
        # A fresh anonymous mapping may merge with a neighbour of the same kind.
        if b"%x-%x" % (lo, hi - size) in old:
            found.add(hi - size)
        if b"%x-%x" % (lo + size, hi) in old:
            found.add(lo)
    return mem, found.pop() if len(found) == 1 else None


def vm_flags(address: int, path: str = SMAPS) -> "list[str] | None":
    """VmFlags of the mapping that holds ``address``; None if smaps is unreadable or lacks it."""
    # VMAs are listed in address order and a freshly advised mapping starts a VMA
    # of its own, so reading stops once that VMA's VmFlags line is in. The kernel
    # hands smaps out a page or so per read(): search only what each read added.
    header = b"\n%x-" % address
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    text = bytearray(b"\n")
    at = -1
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            start = max(0, len(text) - len(header))
            text += chunk
            if at < 0:
                at = text.find(header, start)
            if at >= 0:
                flags_at = text.find(b"\nVmFlags:", at + 1)
                if flags_at >= 0:
                    end = text.find(b"\n", flags_at + 1)
                    if end >= 0:
                        return bytes(text[flags_at + 9 : end]).decode("ascii", "replace").split()
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(text) == 1:
        return None
    return _flags_by_range(bytes(text), address)


def _flags_by_range(text: bytes, address: int) -> "list[str] | None":
    """Slow path: the mapping was merged with a neighbour, so find the VMA that holds ``address``.

    Every VMA's block starts with its header line and ends with its VmFlags line,
    so only real header lines are parsed.
    """
    pos = 1  # text starts with the newline _read() put in front
    while pos < len(text):
        header_end = text.find(b"\n", pos)
        flags_at = text.find(b"\nVmFlags:", header_end)
        if header_end < 0 or flags_at < 0:
            return None
        flags_end = text.find(b"\n", flags_at + 1)
        if flags_end < 0:
            flags_end = len(text)
        lo, _, rest = text[pos:header_end].partition(b"-")
        try:
            inside = int(lo, 16) <= address < int(rest.partition(b" ")[0], 16)
        except ValueError:
            inside = False
        if inside:
            return text[flags_at + 9 : flags_end].decode("ascii", "replace").split()
        pos = flags_end + 1
    return None


def seccomp_mode() -> int | None:
    """0 (none), 1 (strict) or 2 (filter) from /proc/self/status; None if unreadable."""
    text = _read("/proc/self/status")
    if text is None:
        return None
    at = text.find(b"\nSeccomp:")
    if at < 0:
        return None
    try:
        return int(text[at + 9 : text.find(b"\n", at + 1)].strip())
    except ValueError:
        return None


class MadviseBackend(Backend):
    name = "madvise"
    kernel_wipes = True

    def __init__(self) -> None:
        self._wipe = MADV_WIPEONFORK
        self._keep = MADV_KEEPONFORK

    def mark_zero(self, mem: mmap.mmap) -> None:
        mem.madvise(self._wipe)

    def mark_keep(self, mem: mmap.mmap) -> None:
        mem.madvise(self._keep)

    def check_in_helper(self, mem: mmap.mmap) -> str | None:
        """Run by the probe helper only: an invalid advice must fail, or success means nothing."""
        try:
            mem.madvise(INVALID_ADVICE)
        except OSError:
            return None
        return (
            "madvise() accepted an invalid advice value, so its success means nothing here "
            "(a user-mode emulator such as qemu-user?)"
        )

    def _mark_first(self, mem: mmap.mmap) -> None:
        try:
            mem.madvise(MADV_WIPEONFORK)
        except OSError as exc:
            if not (exc.errno == errno.EINVAL and os.uname().machine.startswith("parisc")):
                raise
            mem.madvise(PARISC_MADV_WIPEONFORK)
            self._wipe, self._keep = PARISC_MADV_WIPEONFORK, PARISC_MADV_KEEPONFORK

    def verify(self) -> tuple[Verification, mmap.mmap | None]:
        if not sys.platform.startswith("linux"):
            raise self.unavailable("madvise(MADV_WIPEONFORK) exists only on Linux")
        page, address = map_and_locate(lambda: self.allocate(PAGE_SIZE), PAGE_SIZE)
        try:
            try:
                self._mark_first(page)
            except OSError as exc:
                hint = _HINTS.get(exc.errno or 0)
                msg = describe_oserror("madvise(MADV_WIPEONFORK)", exc)
                raise self.unavailable(f"{msg}: {hint}" if hint else msg) from None
            flags = vm_flags(address) if address is not None else None
            if flags is not None and "wf" in flags:
                return Verification(
                    "smaps", "/proc/self/smaps shows 'wf' in VmFlags for the marked page"
                ), page
            if flags is not None:
                why = "/proc/self/smaps does not show 'wf' for the marked page"
            elif address is None:
                why = "the page's mapping could not be found in /proc/self/maps"
            else:
                why = "/proc/self/smaps is unreadable"
            from ._probe import fork_probe  # needs subprocess: loaded only here

            ok, verification = fork_probe(self.name)
            verification.detail = f"{why}; {verification.detail}"
            if not ok:
                raise self.unavailable(f"madvise(MADV_WIPEONFORK) returned success but {verification.detail}")
            return verification, page
        except BaseException:
            page.close()
            raise
