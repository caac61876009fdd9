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

from __future__ import annotations

import errno
import os
import sys

from ._base import PAGE_SIZE, Backend, Verification, describe_oserror
from ._procfs import map_and_locate, vm_flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap

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
