"""Backends: one module per mechanism behind the ``Backend`` interface below, listed in one table.

Installed as ``inherit.backends``. ``TABLE`` drives the backend names, their
construction and the candidates per platform, best first; adding a backend
means one module and one row. Nothing else in the library asks which platform
it is on. Backends import only downward: this package, the leaf exceptions
module (``inherit._errors``), the generated FFI module (``inherit._native``) and
the fork probe.
"""

import errno
import mmap
import os
import sys

from .._errors import BackendUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

PAGE_SIZE = mmap.PAGESIZE
# Linux gives private anonymous pages back as zeros after MADV_DONTNEED without touching
# them; elsewhere (the BSDs, macOS) it is only a hint. Mlocked pages refuse it.
ZEROING_ADVICE: "int | None" = (
    getattr(mmap, "MADV_DONTNEED", None) if sys.platform.startswith("linux") else None
)
# Restore detection (backends/_restore.py): the vmclock device, and its override.
VMCLOCK_ENV_VAR = "INHERIT_VMCLOCK"
VMCLOCK_DEVICE: "str | None" = "/dev/vmclock0" if sys.platform.startswith("linux") else None


def restore_detection_absent() -> str:
    """Why no restore can be detected here, found without loading _restore; "" if one may be."""
    if os.environ.get(VMCLOCK_ENV_VAR, "").strip() or os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return ""
    if VMCLOCK_DEVICE is None:
        return "not available: vmclock is a Linux device"
    try:
        os.stat(VMCLOCK_DEVICE)
    except FileNotFoundError:
        return f"not available: {VMCLOCK_DEVICE} does not exist"
    except OSError:
        return ""  # there, but not stat-able: _restore says why
    return ""


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

    name: "ClassVar[str]"
    kernel_wipes: "ClassVar[bool]"

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


__all__ = [
    "NAMES",
    "PAGE_SIZE",
    "TABLE",
    "Backend",
    "BackendUnavailable",
    "Selection",
    "Verification",
    "candidates",
    "describe_oserror",
    "make",
    "map_private",
    "names",
    "requested_backend",
    "select",
]

#: (name, sys.platform prefixes it is tried on (empty: everywhere), module, class), best first.
TABLE: "tuple[tuple[str, tuple[str, ...], str, str], ...]" = (
    ("madvise", ("linux",), "madvise", "MadviseBackend"),
    ("minherit", ("openbsd", "freebsd", "netbsd"), "minherit", "MinheritBackend"),
    ("getpid", (), "getpid", "GetpidBackend"),
)
NAMES = tuple(row[0] for row in TABLE)


def names() -> "tuple[str, ...]":
    """The names in TABLE now (NAMES as of import; a row added since counts here)."""
    return tuple(row[0] for row in TABLE)


def make(name: str) -> Backend:
    """Construct a backend by name (not verified)."""
    for row_name, _, module, cls in TABLE:
        if row_name == name:
            imported = __import__(f"{__name__}.{module}", fromlist=[cls])
            backend: Backend = getattr(imported, cls)()
            return backend
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(names())}")


def candidates(platform: "str | None" = None) -> "list[str]":
    """Backends to try on ``platform`` (default: this one), best first."""
    platform = sys.platform if platform is None else platform
    return [name for name, prefixes, _, _ in TABLE if not prefixes or platform.startswith(prefixes)]


class Selection:
    """The chosen backend, its flag page, why, and what was refused on the way."""

    __slots__ = ("backend", "page", "reason", "refused", "requested", "verification")

    def __init__(
        self,
        backend: Backend,
        page: object,
        reason: str,
        requested: "str | None",
        refused: "tuple[tuple[str, str], ...]",
        verification: Verification,
    ) -> None:
        self.backend = backend
        self.page = page
        self.reason = reason
        self.requested = requested
        self.refused = refused
        self.verification = verification


def requested_backend(env_var: str = "INHERIT_BACKEND") -> "str | None":
    """The backend the environment requires, checked; None when unset or empty."""
    value = os.environ.get(env_var, "").strip()
    if not value:
        return None
    known = names()
    if value not in known:
        raise ValueError(f"{env_var}={value!r} is not a backend; use one of {', '.join(known)} or unset it")
    return value


def select(env_var: str = "INHERIT_BACKEND") -> Selection:
    """Verify the candidates in order; honour ``env_var`` strictly (no silent fallback)."""
    requested = requested_backend(env_var)
    if requested is not None:
        backend = make(requested)
        verification, page = backend.verify()  # raises BackendUnavailable
        return Selection(backend, page, f"requested by {env_var}", requested, (), verification)
    refused: list[tuple[str, str]] = []
    for name in candidates():
        backend = make(name)
        try:
            verification, page = backend.verify()
        except BackendUnavailable as exc:
            refused.append((name, exc.reason))
            continue
        if refused:
            reason = "fallback: " + "; ".join(f"{n} refused ({r})" for n, r in refused)
        elif backend.kernel_wipes and verification.method == "smaps":
            reason = "the kernel mechanism was verified in this process"
        elif backend.kernel_wipes:
            reason = f"the kernel mechanism was verified by a {verification.method}"
        else:
            reason = f"no kernel zero-on-fork mechanism on {sys.platform}"
        return Selection(backend, page, reason, None, tuple(refused), verification)
    raise AssertionError("the getpid backend is always available")  # pragma: no cover
