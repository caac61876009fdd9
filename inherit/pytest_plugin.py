"""pytest plugin (entry point ``pytest11``): fork-safety fixtures for your own tests.

``fork_child(func, *args, route="os.fork", timeout=30)`` runs ``func`` in a
forked child and returns its result (re-raising its exception). The
``fork_route`` fixture is parametrized over every route available here, so
one test checks them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .testing import available_routes, run_in_child


@pytest.fixture
def fork_child() -> Callable[..., Any]:
    """``run_in_child`` as a fixture."""
    return run_in_child


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fork_route" in metafunc.fixturenames:
        metafunc.parametrize("fork_route", available_routes() or [pytest.param("none", marks=pytest.mark.skip(reason="no fork on this platform"))])
