"""pytest plugin (entry point ``pytest11``): fork-safety fixtures for your own tests.

Installed with the package and loaded by pytest automatically:

- ``fork_child(func, *args, route="os.fork", timeout=30.0, **kwargs)`` is
  :func:`inherit.testing.run_in_child`: it runs ``func`` in a forked child and
  returns its result, or re-raises its exception.
- ``fork_route`` is parametrized over every route available here, so one test
  covers ``os.fork``, multiprocessing, ``fork()`` from C and, on Linux, the raw
  syscalls (:func:`inherit.testing.available_routes` says which exist). Parametrize
  ``fork_route`` yourself to pick routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .testing import available_routes, run_in_child

__all__ = ["fork_child", "fork_route"]


@pytest.fixture
def fork_child() -> Callable[..., Any]:
    """Run a callable in a forked child: ``fork_child(func, *args, route=..., timeout=...)``."""
    return run_in_child


@pytest.fixture
def fork_route(request: pytest.FixtureRequest) -> str:
    """One fork route per test run; the test is repeated for every route available here."""
    route: str | None = getattr(request, "param", None)
    if route is None:  # requested dynamically, so pytest_generate_tests never saw it
        pytest.fail(
            "request fork_route as a test argument (or a fixture's) so it can be parametrized", pytrace=False
        )
    return route


def _parametrized_by_user(metafunc: pytest.Metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = [part.strip() for part in argnames.split(",")]
        if name in argnames:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fork_route" not in metafunc.fixturenames or _parametrized_by_user(metafunc, "fork_route"):
        return
    routes = available_routes()
    if routes:
        metafunc.parametrize("fork_route", routes, indirect=True, ids=routes)
    else:
        skip = pytest.mark.skip(reason="no fork on this platform")
        metafunc.parametrize("fork_route", [pytest.param("none", marks=skip)], indirect=True, ids=["no-fork"])
