"""Choosing the backend: the one place that knows about platforms.

Selection runs once, on first use (never at import), under a lock. A kernel
backend is chosen only after it has been verified here; otherwise the getpid
backend, with every refusal kept for diagnostics.
"""

from __future__ import annotations

import os
import sys

from ._detect import ProcessLock
from ._errors import BackendUnavailable
from .backends import Backend, Verification

ENV_VAR = "INHERIT_BACKEND"
NAMES = ("madvise", "minherit", "getpid")


class Selection:
    """The chosen backend, why, and what was refused on the way."""

    __slots__ = ("backend", "reason", "refused", "requested", "verification")

    def __init__(
        self,
        backend: Backend,
        reason: str,
        requested: str | None,
        refused: tuple[tuple[str, str], ...],
        verification: Verification,
    ) -> None:
        self.backend = backend
        self.reason = reason
        self.requested = requested
        self.refused = refused
        self.verification = verification


def make(name: str) -> Backend:
    """Construct a backend by name (no verification)."""
    if name == "madvise":
        from .backends.madvise import MadviseBackend

        return MadviseBackend()
    if name == "minherit":
        from .backends.minherit import MinheritBackend

        return MinheritBackend()
    if name == "getpid":
        from .backends.getpid import GetpidBackend

        return GetpidBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")


def candidates(platform: str | None = None) -> list[str]:
    """Backends to try on ``platform`` (default: this one), best first."""
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        return ["madvise", "getpid"]
    if platform.startswith(("openbsd", "freebsd", "netbsd")):
        return ["minherit", "getpid"]
    return ["getpid"]


def requested_backend() -> str | None:
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    if value not in NAMES:
        raise ValueError(f"{ENV_VAR}={value!r} is not a backend; use one of {', '.join(NAMES)} or unset it")
    return value


def _verified(backend: Backend) -> tuple[Verification, object]:
    """Verify ``backend`` and prepare its flag page, or raise BackendUnavailable."""
    from . import _detect

    verification = backend.verify()
    try:
        page = _detect.prepare(backend)
    except OSError as exc:
        from .backends._base import describe_oserror

        raise backend.unavailable(describe_oserror("marking the fork-detection page", exc)) from None
    return verification, page


def choose() -> tuple[Selection, object]:
    """Verify candidates in order; honour INHERIT_BACKEND strictly."""
    requested = requested_backend()
    if requested is not None:
        backend = make(requested)
        verification, page = _verified(backend)  # raises BackendUnavailable
        return Selection(backend, f"requested by {ENV_VAR}", requested, (), verification), page
    refused: list[tuple[str, str]] = []
    for name in candidates():
        backend = make(name)
        try:
            verification, page = _verified(backend)
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
        return Selection(backend, reason, None, tuple(refused), verification), page
    raise AssertionError("the getpid backend is always available")  # pragma: no cover


# Held while a backend is chosen, which may take a while (a fork probe): a
# child forked meanwhile, by any route, must not inherit it held.
_lock = ProcessLock()
_current: Selection | None = None


def current() -> Selection:
    """The active selection, made on first call."""
    selection = _current
    if selection is not None:
        return selection
    return _select()


def _select() -> Selection:
    global _current
    if _lock.held_here():
        raise RuntimeError("inherit was used while this thread is choosing its backend (from a finalizer?)")
    with _lock:
        if _current is None:
            selection, page = choose()
            from . import _detect

            _detect.install(selection.backend, page)
            _current = selection
        return _current


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_lock.reset)
