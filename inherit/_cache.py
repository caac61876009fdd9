"""``per_process_cache``: an ``lru_cache`` that starts empty in every forked child."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from . import _detect

F = TypeVar("F", bound=Callable[..., Any])


@overload
def per_process_cache(func: F, /) -> F: ...
@overload
def per_process_cache(*, maxsize: int | None = 128, typed: bool = False) -> Callable[[F], F]: ...
def per_process_cache(
    func: F | None = None, /, *, maxsize: int | None = 128, typed: bool = False
) -> F | Callable[[F], F]:
    """Like ``functools.lru_cache``, but a forked child never sees the parent's entries."""

    def decorate(f: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize, typed=typed)(f)
        seen = [0]  # generation the entries belong to; 0 = none yet

        def current() -> Any:
            gen = _detect.generation()
            if seen[0] != gen:
                cached.cache_clear()
                seen[0] = gen
            return cached

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return current()(*args, **kwargs)

        wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        # Asked in a child, the answer is about the child's (empty) cache.
        wrapper.cache_info = lambda: current().cache_info()  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    if func is not None:
        if not callable(func):
            raise TypeError("per_process_cache() expects a callable or keyword arguments")
        return decorate(func)
    return decorate
