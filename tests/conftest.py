"""Shared test setup: platform markers and helpers for subprocess-based tests."""

from __future__ import annotations

import os
import sys

import pytest

import inherit

LINUX = sys.platform.startswith("linux")
BSD = sys.platform.startswith(("openbsd", "freebsd", "netbsd"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_linux = pytest.mark.skip(reason=f"Linux only (this is {sys.platform})")
    skip_bsd = pytest.mark.skip(reason=f"needs a real OpenBSD/FreeBSD/NetBSD kernel (this is {sys.platform})")
    skip_root = pytest.mark.skip(reason="needs root")
    for item in items:
        if "linux" in item.keywords and not LINUX:
            item.add_marker(skip_linux)
        if "bsd" in item.keywords and not BSD:
            item.add_marker(skip_bsd)
        if "root" in item.keywords and (not hasattr(os, "geteuid") or os.geteuid() != 0):
            item.add_marker(skip_root)
        if "kernel_backend" in item.keywords and not _kernel_backend():
            item.add_marker(
                pytest.mark.skip(reason=f"backend here is {inherit.backend()!r}, not a kernel one")
            )


def _kernel_backend() -> bool:
    try:
        return inherit.backend() in ("madvise", "minherit")
    except Exception:
        return False


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stress-full", action="store_true", help="run stress tests at full size")


@pytest.fixture
def stress_scale(request: pytest.FixtureRequest) -> int:
    """1 in the default suite, larger with --stress-full (tox -e stress)."""
    return 10 if request.config.getoption("--stress-full") else 1
