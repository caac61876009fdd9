"""Linux /proc readers: where a new mapping is, and which VmFlags the kernel really set.

Return codes are not proof: a sandbox can answer "success" for a call that did
nothing. /proc/self/smaps shows what the kernel actually recorded for a mapping
(``wf`` wipe-on-fork, ``dd`` excluded from core dumps, ``lo`` locked). Finding a
mapping needs its address, which CPython's mmap does not expose; a diff of
/proc/self/maps around the mmap() call gives it without loading cffi or ctypes
(neither loads in an isolated subinterpreter).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from collections.abc import Callable

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


def _ranges(text: bytes) -> set[tuple[int, int]]:
    out = set()
    for line in text.split(b"\n"):
        head, _, _ = line.partition(b" ")
        lo, dash, hi = head.partition(b"-")
        if dash:
            try:
                out.add((int(lo, 16), int(hi, 16)))
            except ValueError:
                continue
    return out


def map_and_locate(make: Callable[[], mmap.mmap], size: int) -> tuple[mmap.mmap, int | None]:
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
    old, new = _ranges(before), _ranges(after)
    found = set()
    for lo, hi in new - old:
        if hi - lo == size:
            found.add(lo)
        # A fresh anonymous mapping may merge with a neighbour of the same kind.
        if (lo, hi - size) in old:
            found.add(hi - size)
        if (lo + size, hi) in old:
            found.add(lo)
    return mem, found.pop() if len(found) == 1 else None


def vm_flags(address: int, path: str = SMAPS) -> list[str] | None:
    """VmFlags of the mapping that holds ``address``; None if smaps is unreadable or lacks it."""
    # VMAs are listed in address order and a freshly advised mapping starts a VMA
    # of its own, so reading stops once that VMA's VmFlags line is in.
    header = b"\n%x-" % address
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    text = b"\n"
    try:
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


def _flags_by_range(text: bytes, address: int) -> list[str] | None:
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
