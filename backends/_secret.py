"""Secret pages: kept out of core dumps and locked in RAM, as far as it can be shown.

On Linux a return code is not proof (a seccomp filter may answer "success" for a
call it dropped), so both protections are read back from /proc/self/smaps
(``dd``, ``lo``) and reported False where smaps is unreadable. Elsewhere the
return codes are trusted: OpenBSD's MAP_CONCEAL is set at mmap() time, FreeBSD
has MADV_NOCORE, NetBSD and macOS have neither (see docs/security.md).
"""

import mmap
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import Backend

_LINUX = sys.platform.startswith("linux")


def map_secret(backend: "Backend", size: int) -> "tuple[mmap.mmap, int | None]":
    """Map with MAP_CONCEAL where it exists; on Linux also find the address, to verify in smaps."""
    if _LINUX:
        from .madvise import map_and_locate

        return map_and_locate(lambda: backend.allocate(size, conceal=True), size)
    return backend.allocate(size, conceal=True), None


def protect(mem: mmap.mmap, address: "int | None") -> "tuple[bool, bool]":
    """(excluded from core dumps, locked in RAM) for a fresh secret mapping."""
    excluded = bool(getattr(mmap, "MAP_CONCEAL", 0))  # set at mmap() time (OpenBSD)
    advice = getattr(mmap, "MADV_DONTDUMP", None)
    if advice is None:
        advice = getattr(mmap, "MADV_NOCORE", None)  # FreeBSD
    if advice is not None and not excluded:
        try:
            mem.madvise(advice)
            excluded = True
        except OSError:
            excluded = False
    locked = _mlock(mem)
    if _LINUX:
        flags = None
        if address is not None:
            from .madvise import vm_flags

            flags = vm_flags(address)
        flags = flags or []
        excluded = excluded and "dd" in flags
        locked = locked and "lo" in flags
    return excluded, locked


def _mlock(mem: mmap.mmap) -> bool:
    """mlock(); False when refused (RLIMIT_MEMLOCK), unavailable, or cffi cannot load (subinterpreters)."""
    try:
        from .._native import ffi
        from ._ffi import libc, pointer_to
    except ImportError:
        return False
    lib = libc()
    if lib is None:
        return False
    pointer = pointer_to(mem)
    try:
        return bool(lib.mlock(pointer, len(mem)) == 0)
    except (AttributeError, ffi.error):  # no mlock symbol (cffi 2 raises ffi.error)
        return False
    finally:
        ffi.release(pointer)
