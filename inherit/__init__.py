"""Control what a forked child inherits.

``zero_on_fork(n)`` hands out memory that reads as zeros in any forked child,
``generation()`` detects forks for the price of a memory read, ``ForkLocal``,
``Random`` and ``per_process_cache`` build per-process state on top, and
``after_fork`` runs code in every new process. The backend (Linux madvise, BSD
minherit, or a getpid fallback) is chosen and verified on first use, never at
import.
"""

from ._errors import BackendUnavailable
from ._region import Region, keep_on_fork, zero_on_fork
from ._runtime import ForkLocal, Random, after_fork, generation, per_process_cache

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.2.0"

__all__ = [
    "BackendUnavailable",
    "ForkLocal",
    "Random",
    "Region",
    "after_fork",
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
    from ._runtime import backend_name

    return backend_name()


def diagnostics() -> "dict[str, Any]":
    """What was chosen and why, as plain data (what ``python -m inherit --json`` prints)."""
    from ._diagnostics import report

    return report()
