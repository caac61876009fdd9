"""OpenBSD, FreeBSD, NetBSD: ``minherit(addr, len, ZERO)`` on private anonymous memory.

The zero value differs between the BSDs, so it is looked up per OS, never assumed:

=========  ==========================  =====  ==============  =====================
OS         name                        value  first release   source
=========  ==========================  =====  ==============  =====================
OpenBSD    ``MAP_INHERIT_ZERO``        3      5.6             ``sys/sys/mman.h``, minherit(2)
FreeBSD    ``INHERIT_ZERO``            3      12.0            ``sys/sys/mman.h``, minherit(2)
NetBSD     ``MAP_INHERIT_ZERO``        4      7.0             ``sys/sys/mman.h``
=========  ==========================  =====  ==============  =====================

On NetBSD 3 is ``MAP_INHERIT_DONATE_COPY`` ("not implemented in UVM", EINVAL), so
passing OpenBSD's value there would be refused, not silently wrong. The undo is
``*_INHERIT_COPY`` = 1 everywhere. DragonFly (``sys/vm/vm.h``: SHARE, COPY, NONE
only) and macOS (XNU ``osfmk/mach/vm_inherit.h``: 3 is DONATE_COPY, above
``VM_INHERIT_LAST_VALID``) have no zero value, so this backend refuses there.

Errors keep their reason instead of crashing: EINVAL from a release older than
the table says, EPERM from OpenBSD for a page without ``PROT_WRITE`` (or an
immutable one), no ``minherit`` symbol at all. There is no ``/proc`` to show the
flag, so verification is a fork probe in a helper process, with a cached verdict
(:mod:`._probe`).

Two environment variables exist only for the test suite, which fakes the BSD C
library on machines that cannot run a BSD kernel; they are not an interface:
``_INHERIT_TEST_MINHERIT_LIBRARY`` (path of a shared library to call instead of
libc) and ``_INHERIT_TEST_MINHERIT_SYSTEM`` (OS whose constants to use, e.g.
``openbsd``). They reach the probe helper, which builds this backend by name.
"""

from __future__ import annotations

import errno
import os
import sys

from . import PAGE_SIZE, Backend, Verification, describe_oserror

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from typing import Any

OPENBSD_MAP_INHERIT_ZERO = 3
FREEBSD_INHERIT_ZERO = 3
NETBSD_MAP_INHERIT_ZERO = 4
NETBSD_MAP_INHERIT_DONATE_COPY = 3
MAP_INHERIT_COPY = 1  # OpenBSD/NetBSD MAP_INHERIT_COPY, FreeBSD INHERIT_COPY

# OS -> (name of the zero constant, its value, first release that has it).
ZERO: dict[str, tuple[str, int, str]] = {
    "openbsd": ("MAP_INHERIT_ZERO", OPENBSD_MAP_INHERIT_ZERO, "5.6"),
    "freebsd": ("INHERIT_ZERO", FREEBSD_INHERIT_ZERO, "12.0"),
    "netbsd": ("MAP_INHERIT_ZERO", NETBSD_MAP_INHERIT_ZERO, "7.0"),
}
COPY: dict[str, tuple[str, int]] = {
    "openbsd": ("MAP_INHERIT_COPY", MAP_INHERIT_COPY),
    "freebsd": ("INHERIT_COPY", MAP_INHERIT_COPY),
    "netbsd": ("MAP_INHERIT_COPY", MAP_INHERIT_COPY),
}
_NO_ZERO_VALUE = {
    "darwin": "macOS has minherit() but no zero value: XNU's VM_INHERIT_* ends at NONE (2) and "
    "3 is DONATE_COPY, which minherit() rejects (osfmk/mach/vm_inherit.h)",
    "dragonfly": "DragonFly BSD's minherit() knows only SHARE, COPY and NONE (sys/vm/vm.h)",
    "win": "Windows has neither fork nor minherit()",
}

LIBRARY_ENV = "_INHERIT_TEST_MINHERIT_LIBRARY"
SYSTEM_ENV = "_INHERIT_TEST_MINHERIT_SYSTEM"


class _Missing(Exception):
    """minherit() cannot be called here at all (no C library or no symbol)."""


def system_of(platform: str) -> str:
    """``"openbsd7"`` -> ``"openbsd"``: sys.platform without its version digits."""
    return platform.rstrip("0123456789.")


class MinheritBackend(Backend):
    name = "minherit"
    kernel_wipes = True

    def __init__(self, system: str | None = None, library: str | None = None) -> None:
        """``system`` and ``library`` default to this OS and its C library (see the module doc)."""
        if system is None:
            system = os.environ.get(SYSTEM_ENV) or system_of(sys.platform)
        if library is None:
            library = os.environ.get(LIBRARY_ENV) or None
        self.system = system
        self.library = library
        self._function: Any = None  # cffi function int minherit(void *, size_t, int)
        self._lib: Any = None  # keeps a dlopen'ed library alive as long as its function

    # -- the call ------------------------------------------------------------
    def _minherit(self) -> Any:
        """The ``minherit`` function of libc (or of ``library``), looked up once."""
        if self._function is not None:
            return self._function
        from .._native import ffi

        if self.library is not None:
            try:
                lib = ffi.dlopen(self.library)
            except OSError as exc:
                raise _Missing(f"cannot load {self.library}: {exc}") from None
        else:
            from ._ffi import libc

            lib = libc()
            if lib is None:
                raise _Missing("there is no C library to call on this platform (Windows)")
        try:
            function = lib.minherit  # type: ignore[attr-defined]
        except (AttributeError, ffi.error):
            where = self.library or "the C library"
            raise _Missing(f"{where} has no minherit() symbol") from None
        self._lib, self._function = lib, function
        return function

    def _call(self, mem: mmap.mmap, value: int, what: str) -> None:
        """minherit() over all of ``mem``; OSError with the C errno on failure."""
        from .._native import ffi
        from ._ffi import pointer_to

        try:
            function = self._minherit()
        except _Missing as exc:
            raise OSError(errno.ENOSYS, f"minherit({what}): {exc}") from None
        pointer = pointer_to(mem)  # holds the buffer (and so the mapping) during the call
        try:
            result = function(pointer, len(mem), value)
            code = ffi.errno
        finally:
            ffi.release(pointer)  # else mem.close() would fail with "exported pointers exist"
        if result != 0:
            raise OSError(code, f"minherit({what}={value}): {os.strerror(code)}")

    def _zero(self) -> tuple[str, int]:
        entry = ZERO.get(self.system)
        if entry is None:
            raise OSError(errno.EINVAL, self._no_value_reason())
        return entry[0], entry[1]

    def _no_value_reason(self) -> str:
        return _NO_ZERO_VALUE.get(
            self.system,
            f"minherit() has a zero value only on OpenBSD, FreeBSD and NetBSD, not on {self.system!r}",
        )

    def mark_zero(self, mem: mmap.mmap) -> None:
        name, value = self._zero()
        self._call(mem, value, name)

    def mark_keep(self, mem: mmap.mmap) -> None:
        name, value = COPY.get(self.system, ("MAP_INHERIT_COPY", MAP_INHERIT_COPY))
        self._call(mem, value, name)

    # -- verification ----------------------------------------------------------
    def _hint(self, code: int) -> str | None:
        name, _, release = ZERO[self.system]
        pretty = {"openbsd": "OpenBSD", "freebsd": "FreeBSD", "netbsd": "NetBSD"}[self.system]
        if code == errno.EINVAL:
            return f"{pretty} older than {release} has no {name}, or this is not {pretty}"
        if code == errno.EPERM:
            if self.system == "openbsd":
                return "OpenBSD refuses MAP_INHERIT_ZERO on a page without PROT_WRITE or an immutable page"
            return "refused by a security policy"
        return None

    def verify(self) -> tuple[Verification, mmap.mmap | None]:
        if self.system not in ZERO:
            raise self.unavailable(self._no_value_reason())
        try:
            self._minherit()
        except _Missing as exc:
            raise self.unavailable(str(exc)) from None
        name, value, _ = ZERO[self.system]
        page = self.allocate(PAGE_SIZE)
        try:
            try:
                self.mark_zero(page)
            except OSError as exc:
                message = describe_oserror(f"minherit({name}={value})", exc)
                hint = self._hint(exc.errno or 0)
                raise self.unavailable(f"{message}: {hint}" if hint else message) from None
            try:  # keep_on_fork() must work too, or regions could not be handed back
                self.mark_keep(page)
                self.mark_zero(page)
            except OSError as exc:
                raise self.unavailable(describe_oserror(f"minherit(COPY={MAP_INHERIT_COPY})", exc)) from None
            from ._probe import fork_probe  # needs subprocess: loaded only here

            ok, verification = fork_probe(self.name)
            if not ok:
                raise self.unavailable(verification.detail)
            verification.detail = f"minherit({name}={value}) on {self.system}: {verification.detail}"
            return verification, page
        except BaseException:
            page.close()
            raise
