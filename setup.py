"""The optional compiled accelerator, ``inherit._speedups``; everything else is in pyproject.toml.

INHERIT_BUILD_EXTENSION chooses:
  auto (default)  build it; without a working compiler, install pure Python and say so
  1               build it; a failure fails the build (release wheels)
  0               pure Python only (the py3-none-any wheel)

It is never built for free-threaded interpreters or for other implementations
than CPython: the pure-Python runtime is what runs there.
"""

import os
import platform
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODE = os.environ.get("INHERIT_BUILD_EXTENSION", "auto").strip().lower() or "auto"
if MODE not in ("auto", "0", "1"):
    raise SystemExit(f"INHERIT_BUILD_EXTENSION must be auto, 0 or 1, not {MODE!r}")

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
SUPPORTED = platform.python_implementation() == "CPython" and not FREE_THREADED and os.name == "posix"


class OptionalBuildExt(build_ext):
    """In auto mode a failed compile installs the pure-Python package instead, with a message."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._fall_back(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: Exception) -> None:
        if MODE == "1":
            raise
        print(
            f"\nWARNING: inherit._speedups was not built ({exc}); installing the pure-Python "
            "implementation, which behaves the same, only slower on the hot paths.\n",
            file=sys.stderr,
        )


ext_modules = []
if MODE == "1" and not SUPPORTED:
    raise SystemExit(
        "INHERIT_BUILD_EXTENSION=1, but the accelerator is built only for CPython with the GIL on POSIX"
    )
if MODE != "0" and SUPPORTED:
    ext_modules.append(
        Extension(
            "inherit._speedups",
            sources=["inherit/_speedups.c"],
            extra_compile_args=["-O2"] if sys.platform != "win32" else [],
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
