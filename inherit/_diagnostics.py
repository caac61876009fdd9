"""Plain-data report of the backend choice, for the CLI and for bug reports.

Every key is always present (``None`` when it does not apply), so scripts can
read ``python -m inherit --json`` without guessing.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from . import __version__

#: The keys of :func:`report`, in the order the text report shows them.
KEYS = (
    "inherit",
    "python",
    "implementation",
    "executable",
    "platform",
    "system",
    "release",
    "os_version",
    "machine",
    "candidates",
    "requested",
    "backend",
    "kernel_wipes",
    "reason",
    "refused",
    "verdicts",
    "verification",
    "verification_detail",
    "cache",
    "cache_dir",
    "accelerated",
    "accelerator",
    "restore_detection",
    "error",
)


def _cache_dir() -> str | None:
    from .backends._probe import cache_dir

    directory = cache_dir()
    return None if directory is None else str(directory)


def _describe_error(exc: Exception) -> str:
    from ._errors import BackendUnavailable

    if isinstance(exc, (BackendUnavailable, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def report() -> dict[str, Any]:
    """What was chosen and why, as JSON-ready data; never raises for a bad backend."""
    from . import _runtime
    from ._errors import BackendUnavailable
    from .backends import candidates as backend_candidates

    candidates = backend_candidates()
    requested = os.environ.get(_runtime.ENV_VAR, "").strip() or None
    data: dict[str, Any] = dict.fromkeys(KEYS)
    data.update(
        inherit=__version__,
        python=sys.version.split()[0],
        implementation=platform.python_implementation(),
        executable=sys.executable,
        platform=sys.platform,
        system=platform.system(),
        release=platform.release(),
        os_version=platform.version(),
        machine=platform.machine(),
        candidates=candidates,
        requested=requested,
        refused={},
        verdicts=[],
        cache_dir=_cache_dir(),
        accelerated=_runtime.accelerated,
        accelerator=_runtime.accelerator,
    )
    try:
        selection = _runtime.selection()
    except Exception as exc:  # the report must always print, whatever went wrong
        data["error"] = _describe_error(exc)
        if isinstance(exc, BackendUnavailable):
            data["refused"] = {exc.backend: exc.reason}
            data["verdicts"] = [_verdict(exc.backend, "refused", exc.reason)]
        return data

    verification = selection.verification
    name = selection.backend.name
    refused = dict(selection.refused)
    verdicts: list[dict[str, str]] = []
    if selection.requested is not None:
        verdicts.append(_verdict(name, "chosen", selection.reason))
        verdicts += [
            _verdict(other, "not tried", f"{_runtime.ENV_VAR} requests {name}")
            for other in candidates
            if other != name
        ]
    else:
        chosen_seen = False
        for candidate in candidates:
            if candidate in refused:
                verdicts.append(_verdict(candidate, "refused", refused[candidate]))
            elif candidate == name:
                verdicts.append(_verdict(candidate, "chosen", selection.reason))
                chosen_seen = True
            elif chosen_seen:
                verdicts.append(_verdict(candidate, "not tried", f"{name} was verified first"))
    data.update(
        backend=name,
        kernel_wipes=selection.backend.kernel_wipes,
        reason=selection.reason,
        refused=refused,
        verdicts=verdicts,
        verification=verification.method,
        verification_detail=verification.detail,
        cache=verification.cache_path,
        restore_detection=_runtime.restore_detection,
    )
    return data


def _verdict(backend: str, outcome: str, detail: str) -> dict[str, str]:
    return {"backend": backend, "outcome": outcome, "detail": detail}
