"""Linux: ``madvise(MADV_WIPEONFORK)`` (4.14+) on private anonymous memory.

Values from ``include/uapi/asm-generic/mman-common.h``: WIPEONFORK 18,
KEEPONFORK 19. parisc used 71/72 up to 6.1 (``arch/parisc/include/uapi/asm/mman.h``);
newer parisc kernels accept both.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys

from ._base import Backend, Verification, describe_oserror, page_size

MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19
PARISC_MADV_WIPEONFORK = 71
PARISC_MADV_KEEPONFORK = 72
_INVALID_ADVICE = -1

_HINTS = {
    errno.EINVAL: "kernel older than 4.14, or a sandbox such as gVisor that refuses it",
    errno.ENOSYS: "kernel built without CONFIG_ADVISE_SYSCALLS",
    errno.EPERM: "refused by a seccomp policy or sealed memory",
}


def address_of(mem: mmap.mmap) -> int:
    import _cffi_backend  # no cdef needed for from_buffer and a cast

    ffi = _cffi_backend.FFI()
    return int(ffi.cast("uintptr_t", ffi.from_buffer(mem)))


def smaps_flags(address: int, path: str = "/proc/self/smaps") -> list[str] | None:
    """VmFlags of the mapping holding ``address``; None if smaps is unreadable."""
    # A freshly advised page is a VMA of its own starting at ``address``; VMAs
    # are listed in address order, so stop reading once its VmFlags line is in.
    header = b"\n%x-" % address
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        text = b"\n"
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk
            at = text.find(header)
            if at >= 0:
                flags_at = text.find(b"\nVmFlags:", at + 1)
                if flags_at >= 0:
                    end = text.find(b"\n", flags_at + 1)
                    if end >= 0:
                        return text[flags_at + 9 : end].decode("ascii", "replace").split()
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(text) == 1:
        return None
    return _flags_by_range(text, address)


def _flags_by_range(text: bytes, address: int) -> list[str]:
    """Slow path: the mapping was merged with a neighbour, so find it by range."""
    in_target = False
    for line in text.split(b"\n"):
        head = line.split(b" ", 1)[0]
        if b"-" in head and not head.endswith(b":"):
            lo, _, hi = head.partition(b"-")
            try:
                in_target = int(lo, 16) <= address < int(hi, 16)
            except ValueError:
                in_target = False
        elif in_target and line.startswith(b"VmFlags:"):
            return line[len(b"VmFlags:") :].decode("ascii", "replace").split()
    return []


class MadviseBackend(Backend):
    name = "madvise"
    kernel_wipes = True

    def __init__(self, smaps_path: str = "/proc/self/smaps") -> None:
        self._smaps_path = smaps_path
        self._wipe = MADV_WIPEONFORK
        self._keep = MADV_KEEPONFORK

    def mark_zero(self, mem: mmap.mmap) -> None:
        mem.madvise(self._wipe)

    def mark_keep(self, mem: mmap.mmap) -> None:
        mem.madvise(self._keep)

    def _mark_first(self, mem: mmap.mmap) -> None:
        try:
            mem.madvise(MADV_WIPEONFORK)
        except OSError as exc:
            legacy = os.uname().machine.startswith("parisc")
            if not (legacy and exc.errno == errno.EINVAL):
                raise
            mem.madvise(PARISC_MADV_WIPEONFORK)
            self._wipe, self._keep = PARISC_MADV_WIPEONFORK, PARISC_MADV_KEEPONFORK

    def verify(self) -> Verification:
        if not sys.platform.startswith("linux"):
            raise self.unavailable("madvise(MADV_WIPEONFORK) exists only on Linux")
        mem = self.allocate(page_size())
        try:
            try:
                mem.madvise(_INVALID_ADVICE)
            except OSError:
                pass
            else:
                raise self.unavailable(
                    "madvise() accepted an invalid advice value, so its success means "
                    "nothing here (a user-mode emulator such as qemu-user?)"
                )
            try:
                self._mark_first(mem)
            except OSError as exc:
                hint = _HINTS.get(exc.errno or 0)
                msg = describe_oserror("madvise(MADV_WIPEONFORK)", exc)
                raise self.unavailable(f"{msg}: {hint}" if hint else msg) from None
            flags = smaps_flags(address_of(mem), self._smaps_path)
            if flags is not None:
                if "wf" in flags:
                    return Verification("smaps", "/proc/self/smaps shows 'wf' in VmFlags for a marked page")
                raise self.unavailable(
                    "madvise(MADV_WIPEONFORK) returned success but /proc/self/smaps does not "
                    "show 'wf' for the page, so the advice is not in effect"
                )
        finally:
            mem.close()
        from ._probe import fork_probe  # only without /proc: it needs subprocess

        ok, verification = fork_probe(self.name)
        verification.detail = f"/proc/self/smaps is unreadable; {verification.detail}"
        if not ok:
            raise self.unavailable(verification.detail)
        return verification
