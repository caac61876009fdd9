"""Best-effort protection for secret regions: out of core dumps, locked in RAM."""

from __future__ import annotations

import mmap


def exclude_from_core_dumps(mem: mmap.mmap) -> bool:
    """MADV_DONTDUMP (Linux) or MADV_NOCORE (FreeBSD); False where neither exists."""
    advice = getattr(mmap, "MADV_DONTDUMP", None)
    if advice is None:
        advice = getattr(mmap, "MADV_NOCORE", None)
    if advice is None:
        return False
    try:
        mem.madvise(advice)
    except OSError:
        return False
    # Success proves nothing where madvise() accepts anything and does nothing
    # (user-mode emulators such as qemu-user): there a bogus advice succeeds too.
    try:
        mem.madvise(-1)
    except OSError:
        return True
    return False


def lock_in_memory(mem: mmap.mmap) -> bool:
    """mlock(); False when refused (RLIMIT_MEMLOCK) or unavailable."""
    from ._libc import libc, pointer_to
    from ._native import ffi

    lib = libc()
    if lib is None:
        return False
    try:
        return bool(lib.mlock(pointer_to(mem), len(mem)) == 0)
    except (AttributeError, ffi.error):  # no mlock symbol (cffi 2 raises ffi.error)
        return False
