"""``inherit.Random`` and ``per_process_cache`` as drop-ins for what they replace.

``random.Random`` seeds itself in ``__new__``, so a subclass whose ``__init__``
does not call ``super().__init__()`` still works; an ``inherit.Random`` subclass
written the same way must draw (and reseed in a child) too. And
``functools.lru_cache(func, True)`` honours ``typed``, so
``per_process_cache(func, True)`` must as well.
"""

from __future__ import annotations

import functools
import random

import inherit
from inherit.testing import run_in_child


def test_a_random_subclass_that_skips_super_init_draws_and_reseeds() -> None:
    class Plain(random.Random):
        def __init__(self, scale: float) -> None:
            self.scale = scale

    class Reseeding(inherit.Random):
        def __init__(self, scale: float) -> None:
            self.scale = scale

    assert 0 <= Plain(2.0).random() < 1  # what the standard library allows
    rng = Reseeding(2.0)
    first = rng.random()
    assert 0 <= first < 1
    child = run_in_child(lambda: [rng.random() for _ in range(4)], route="os.fork")
    assert child != [rng.random() for _ in range(4)], "the child repeated the parent's stream"


def test_decorating_directly_with_typed_matches_lru_cache() -> None:
    def ident(x: object) -> object:
        return x

    expected = functools.lru_cache(ident, True)  # type: ignore[call-overload]
    got = inherit.per_process_cache(ident, True)
    assert got.cache_parameters() == expected.cache_parameters()
    for value in (1, 1.0, True, 1):
        expected(value)
        got(value)
    assert got.cache_info() == expected.cache_info()
