"""PEP 517 build backend: ``setuptools.build_meta``, once setuptools is known to be new enough.

pyproject.toml declares ``license = "MIT"`` (PEP 639), which setuptools reads from 77.0.3 on. An
isolated build installs such a setuptools by itself; a build without isolation
(``pip install --no-build-isolation``, ``python -m build --no-isolation``) uses whatever the
environment has, and setuptools 66 (Debian 12) would fail with a schema error about
``project.license`` that does not say why. This module says why.
"""

from __future__ import annotations

import re

MINIMUM = (77, 0, 3)
_HOW = (
    "Build with isolation (drop --no-build-isolation / --no-isolation: pip then installs a new enough "
    "setuptools just for the build), or first run: python -m pip install 'setuptools>=77.0.3'"
)


def _release(version: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: "66.1.1" -> (66, 1, 1)."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


try:
    import setuptools
except ImportError:
    raise RuntimeError(
        "building pyinherit needs setuptools>=77.0.3, and this environment has no setuptools. " + _HOW
    ) from None

if _release(setuptools.__version__) < MINIMUM:
    raise RuntimeError(
        f"building pyinherit needs setuptools>=77.0.3 (for the PEP 639 license field); this "
        f"environment has setuptools {setuptools.__version__}. " + _HOW
    )

from setuptools.build_meta import *  # noqa: E402, F403
from setuptools.build_meta import __all__  # noqa: E402, F401
