"""Backends: one module per mechanism behind the interface in ``_base``, listed in one table.

Installed as ``inherit.backends``. ``TABLE`` drives the backend names,
their construction and the candidates per platform, best first; adding a
backend means one module and one row. Nothing else in the library asks which
platform it is on.
"""

import sys

from .._errors import BackendUnavailable
from ._base import PAGE_SIZE, Backend, Verification, describe_oserror, map_private

__all__ = [
    "NAMES",
    "PAGE_SIZE",
    "TABLE",
    "Backend",
    "BackendUnavailable",
    "Verification",
    "candidates",
    "describe_oserror",
    "make",
    "map_private",
    "names",
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
