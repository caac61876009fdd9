"""The interface every backend implements, and helpers they share."""

from __future__ import annotations

import errno
import mmap
import os

from .._errors import BackendUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

_PAGE = mmap.PAGESIZE


def page_size() -> int:
    return _PAGE


def map_private(size: int) -> mmap.mmap:
    """Map ``size`` bytes of fresh private anonymous memory.

    ``mmap.mmap(-1, n)`` alone is MAP_SHARED on Unix, which the kernel refuses
    to wipe, so the flags are spelled out. Windows has no such flags and no fork.
    """
    try:
        if os.name == "nt":  # pragma: no cover - exercised on Windows CI only
            return mmap.mmap(-1, size)
        return mmap.mmap(
            -1,
            size,
            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        )
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
    """Allocate pages, mark them zero- or keep-on-fork, prove it works.

    ``kernel_wipes`` says whether a child sees zeros with no help from us
    (the kernel does it) or whether the library must wipe lazily.
    """

    name: ClassVar[str]
    kernel_wipes: ClassVar[bool]

    def allocate(self, size: int) -> mmap.mmap:
        """Fresh private memory of ``size`` bytes (a multiple of the page size)."""
        return map_private(size)

    def mark_zero(self, mem: mmap.mmap) -> None:
        """Make children see zeros in ``mem``; raise OSError on refusal."""
        raise NotImplementedError

    def mark_keep(self, mem: mmap.mmap) -> None:
        """Make children inherit a copy of ``mem`` again."""
        raise NotImplementedError

    def verify(self) -> Verification:
        """Show the mechanism works here, or raise BackendUnavailable."""
        raise NotImplementedError

    def unavailable(self, reason: str) -> BackendUnavailable:
        return BackendUnavailable(self.name, reason)
