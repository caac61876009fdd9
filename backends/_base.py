"""The interface every backend implements, and what backends share.

Backends import only downward: this module, the leaf exceptions module
(``inherit._errors``), the generated FFI module (``inherit._native``), the fork
probe and the /proc readers. The runtime (``inherit._runtime``) constructs them
through the table in ``__init__``.
"""

from __future__ import annotations

import errno
import mmap
import os

from .._errors import BackendUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

PAGE_SIZE = mmap.PAGESIZE


def map_private(size: int, *, conceal: bool = False) -> mmap.mmap:
    """``size`` bytes of fresh private anonymous memory (``MemoryError`` if there is no room).

    ``mmap.mmap(-1, n)`` alone is MAP_SHARED on Unix, which no kernel wipes on
    fork, so the flags are spelled out. ``conceal`` adds OpenBSD's MAP_CONCEAL
    (left out of core dumps) where the platform has it. Windows has neither the
    flags nor fork.
    """
    try:
        if os.name == "nt":  # pragma: no cover - exercised on Windows CI only
            return mmap.mmap(-1, size)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        if conceal:
            flags |= getattr(mmap, "MAP_CONCEAL", 0)
        return mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            raise MemoryError(f"cannot map {size} bytes: {exc.strerror}") from exc
        raise


def describe_oserror(call: str, exc: OSError) -> str:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    return f"{call} failed with {name} ({os.strerror(code)})"


class Verification:
    """How a backend was shown to work in this process."""

    __slots__ = ("cache_path", "detail", "method")

    def __init__(self, method: str, detail: str = "", cache_path: str | None = None) -> None:
        self.method = method
        self.detail = detail
        self.cache_path = cache_path

    def __repr__(self) -> str:
        return f"Verification({self.method!r}, {self.detail!r}, {self.cache_path!r})"


class Backend:
    """Allocate pages, mark them zero- or keep-on-fork, and prove the mechanism works.

    ``kernel_wipes`` says whether a child sees zeros with no help from the
    library (the kernel does it) or whether the library must wipe lazily.
    """

    name: ClassVar[str]
    kernel_wipes: ClassVar[bool]

    def allocate(self, size: int, *, conceal: bool = False) -> mmap.mmap:
        """Fresh private memory of ``size`` bytes (a multiple of the page size)."""
        return map_private(size, conceal=conceal)

    def mark_zero(self, mem: mmap.mmap) -> None:
        """Make children see zeros in ``mem``; raise OSError on refusal."""
        raise NotImplementedError

    def mark_keep(self, mem: mmap.mmap) -> None:
        """Make children inherit a copy of ``mem`` again; raise OSError on refusal."""
        raise NotImplementedError

    def verify(self) -> tuple[Verification, mmap.mmap | None]:
        """Show the mechanism works here, or raise BackendUnavailable.

        A kernel backend returns the page it proved, still marked zero-on-fork:
        it becomes the fork-detection flag page. The getpid backend returns None.
        """
        raise NotImplementedError

    def unavailable(self, reason: str) -> BackendUnavailable:
        return BackendUnavailable(self.name, reason)
