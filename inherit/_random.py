"""``inherit.Random``: a ``random.Random`` that reseeds itself in every new process."""

from __future__ import annotations

import random as _random
from typing import Any

from . import _detect

_base = _random.Random


class Random(_random.Random):
    """Reseeds from ``os.urandom`` on its first draw in a new process.

    Every drawing method goes through ``random()``, ``getrandbits()`` or
    ``gauss()``, which check first. An instance seeded explicitly
    (``Random(42)``, ``seed(42)``, ``setstate(...)``) asked for a repeatable
    stream and keeps it: a forked child continues the same sequence, exactly
    like ``random.Random(42)``. ``seed()`` or ``seed(None)`` turns reseeding on again.
    """

    _inherit_gen: int
    _inherit_auto: bool

    def __init__(self, x: Any = None) -> None:
        super().__init__(x)

    def seed(self, a: Any = None, version: int = 2) -> None:
        super().seed(a, version)
        self._inherit_auto = a is None
        self._inherit_gen = _detect.generation()

    def setstate(self, state: tuple[Any, ...]) -> None:
        super().setstate(state)
        self._inherit_auto = False
        self._inherit_gen = _detect.generation()

    def __reduce__(self) -> tuple[Any, ...]:
        # random.Random restores through setstate(), which would turn reseeding
        # off in every copy; keep the instance's own choice instead.
        return (type(self), (), (_base.getstate(self), self._inherit_auto))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        internal, auto = state
        _base.setstate(self, internal)
        self._inherit_auto = bool(auto)
        self._inherit_gen = _detect.generation()

    def _check(self) -> None:
        gen = _detect.generation()
        if self._inherit_gen != gen:
            if self._inherit_auto:
                _base.seed(self, None)
            self._inherit_gen = gen

    def random(self) -> float:
        if self._inherit_gen != _detect.generation():
            self._check()
        return _base.random(self)

    def getrandbits(self, k: int, /) -> int:
        if self._inherit_gen != _detect.generation():
            self._check()
        return _base.getrandbits(self, k)

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        # gauss() caches a second value; a child must not reuse the parent's.
        if self._inherit_gen != _detect.generation():
            self._check()
        return _base.gauss(self, mu, sigma)

    def getstate(self) -> tuple[Any, ...]:
        if self._inherit_gen != _detect.generation():
            self._check()
        return _base.getstate(self)

    @property
    def reseeds_on_fork(self) -> bool:
        """False once the instance was seeded explicitly."""
        return self._inherit_auto
