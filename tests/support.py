"""Helpers for tests: run Python in a fresh process, build test-only C libraries."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

_BUILD_DIR = Path(tempfile.gettempdir()) / f"inherit-test-libs-{os.getuid() if hasattr(os, 'getuid') else 0}"


def run_python(
    code: str, env: dict[str, str] | None = None, timeout: float = 60.0, args: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (outside the source tree) and capture output.

    ``env`` entries are added to this process's environment; a value of ""
    removes the variable.
    """
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value == "":
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *(args or [])],
        env=full_env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def _build(source: str, name: str, suffix: str, flags: list[str]) -> Path:
    """Compile ``source`` with ``flags`` (cached by content); skip without a compiler."""
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler to build the test-only code")
    source = textwrap.dedent(source)
    digest = hashlib.sha256((source + repr(flags)).encode()).hexdigest()[:16]
    out = _BUILD_DIR / f"{name}-{digest}{suffix}"
    if out.exists():
        return out
    _BUILD_DIR.mkdir(parents=True, exist_ok=True)
    src = _BUILD_DIR / f"{name}-{digest}.c"
    src.write_text(source)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # atomic: parallel runs share the cache
    result = subprocess.run(
        [cc, *flags[:-1], "-o", str(tmp), str(src), flags[-1]], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{result.stderr}")
    os.replace(tmp, out)
    return out


def build_shared_library(source: str, name: str, extra_flags: list[str] | None = None) -> Path:
    """Compile C ``source`` into a shared library (cached by content); skip without a compiler."""
    return _build(source, name, ".so", ["-shared", "-fPIC", "-O1", *(extra_flags or []), "-ldl"])


def build_program(source: str, name: str) -> Path:
    """Compile a small C program (cached by content); skip without a compiler."""
    return _build(source, name, "", ["-O1", "-lc"])
