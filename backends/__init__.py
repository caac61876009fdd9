"""Backends: one module per mechanism behind the interface in ``_base``.

Installed as ``inherit.backends``. Which backend runs is decided in one
place, :mod:`inherit._select`; nothing else asks which platform it is on.
"""

from __future__ import annotations

from ._base import Backend, Verification, map_private, page_size

__all__ = ["Backend", "Verification", "map_private", "page_size"]
