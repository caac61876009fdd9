"""Control what a forked child inherits.

``zero_on_fork(n)`` hands out memory that reads as zeros in any forked child,
``generation()`` detects forks for the price of a memory read, ``ForkLocal``
and ``Random`` build per-process state on top. The backend (Linux madvise,
BSD minherit, or a getpid fallback) is chosen and verified on first use,
never at import.
"""

from __future__ import annotations

import os as _os

# A wheel installs backends/ as inherit/backends. In a source checkout it sits
# beside inherit/; map just that package so the checkout imports as it is.
_backends = _os.path.join(_os.path.dirname(__path__[0]), "backends")
if not _os.path.isdir(_os.path.join(__path__[0], "backends")) and _os.path.isfile(
    _os.path.join(_backends, "_base.py")
):
    import importlib.util as _util
    import sys as _sys

    _spec = _util.spec_from_file_location(
        "inherit.backends", _os.path.join(_backends, "__init__.py"), submodule_search_locations=[_backends]
    )
    if _spec is not None and _spec.loader is not None and "inherit.backends" not in _sys.modules:
        _module = _util.module_from_spec(_spec)
        _sys.modules["inherit.backends"] = _module
        _spec.loader.exec_module(_module)
        backends = _module  # as the import system does for a subpackage
del _backends

from ._detect import generation  # noqa: E402
from ._errors import BackendUnavailable  # noqa: E402
from ._local import ForkLocal  # noqa: E402
from ._region import Region, keep_on_fork, zero_on_fork  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._cache import per_process_cache
    from ._random import Random

__version__ = "0.2.0"

__all__ = [
    "BackendUnavailable",
    "ForkLocal",
    "Random",
    "Region",
    "backend",
    "diagnostics",
    "generation",
    "keep_on_fork",
    "per_process_cache",
    "zero_on_fork",
]


def backend() -> str:
    """The active backend: ``"madvise"``, ``"minherit"`` or ``"getpid"``.

    Chosen on first use. Raises ``ValueError`` for an unknown
    ``INHERIT_BACKEND`` and :class:`BackendUnavailable` if the requested one
    does not work here.
    """
    from ._select import current

    return current().backend.name


def diagnostics() -> dict[str, Any]:
    """What was chosen and why, as plain data (what ``python -m inherit --json`` prints)."""
    from ._diagnostics import report

    return report()


def __getattr__(name: str) -> Any:
    # Loaded on demand: importing ``random`` is not free.
    if name == "Random":
        from ._random import Random

        return Random
    if name == "per_process_cache":
        from ._cache import per_process_cache

        return per_process_cache
    raise AttributeError(f"module 'inherit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
