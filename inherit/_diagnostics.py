"""Plain-data report of the backend choice, for the CLI and for bug reports."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from . import __version__


def report() -> dict[str, Any]:
    from . import _select
    from ._errors import BackendUnavailable

    data: dict[str, Any] = {
        "inherit": __version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": sys.platform,
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "candidates": _select.candidates(),
        "requested": os.environ.get(_select.ENV_VAR) or None,
    }
    try:
        selection = _select.current()
    except (BackendUnavailable, ValueError) as exc:
        data.update(backend=None, error=str(exc))
        return data
    verification = selection.verification
    data.update(
        backend=selection.backend.name,
        kernel_wipes=selection.backend.kernel_wipes,
        reason=selection.reason,
        refused={name: why for name, why in selection.refused},
        verification=verification.method,
        verification_detail=verification.detail,
        cache=verification.cache_path,
    )
    return data
