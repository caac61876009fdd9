"""Helpers for tests: run Python in a fresh process, run fault cases there, build test-only C code.

``run_python`` is the one way tests start an interpreter; ``run_case`` builds on it
for scripts that report one JSON ``RESULT`` line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

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


# -- one subprocess case runner, shared by the selection, fault and confinement suites ----------------

#: Fault-shim modes for madvise that must each end in the getpid fallback, with a fragment of the reason.
REFUSALS = {
    "EPERM": "EPERM",
    "EINVAL": "EINVAL",
    "ENOSYS": "ENOSYS",
    "ENOMEM": "ENOMEM",
    "IGNORE": "smaps",  # accepts anything, even nonsense advice (old qemu-user): smaps shows no 'wf'
    "IGNORE_WIPE": "smaps",  # accepts WIPEONFORK but nothing happens
}

# Common to every case script: fill regions, fork by several routes, count the
# non-zero bytes each child reads through the API.
CASE_PRELUDE = r"""
import errno, json, os, sys
import inherit
from inherit.testing import available_routes, run_in_child

out = {}
ROUTES = [r for r in ("os.fork", "libc.fork", "syscall.fork", "syscall.clone") if r in available_routes()]

def describe(exc):
    return {"type": type(exc).__name__, "errno": getattr(exc, "errno", None), "message": str(exc)}

def filled(n, secret=False, byte=0xA5):
    r = inherit.zero_on_fork(n, secret=secret)
    r[:] = bytes([byte]) * n
    return r

def children(regions, routes=ROUTES):
    # stale = non-zero bytes a child reads in regions its parent filled
    gen = inherit.generation()
    def child():
        return sum(len(r) - bytes(r).count(0) for r in regions), inherit.generation() != gen
    result = {}
    for route in routes:
        try:
            stale, moved = run_in_child(child, route=route, timeout=30)
            result[route] = {"stale": stale, "gen_moved": moved}
        except Exception as exc:
            result[route] = {"error": describe(exc)}
    return result

def intact(regions, byte=0xA5):
    return all(bytes(r) == bytes([byte]) * len(r) for r in regions)

def selection():
    d = inherit.diagnostics()
    keys = ("backend", "reason", "verification", "verification_detail", "cache", "error", "refused")
    return {k: d.get(k) for k in keys}
"""


def case_result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The ``out`` dict a case script printed on its ``RESULT`` line; fails on a crash."""
    assert proc.returncode == 0, f"the process died ({proc.returncode}):\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result:\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def run_case(body: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Run CASE_PRELUDE + ``body`` in a fresh interpreter and return its ``out`` dict.

    INHERIT_BACKEND is unset unless ``env`` sets it: selection itself is usually under test.
    """
    full_env = {"INHERIT_BACKEND": "", **(env or {})}
    return case_result(run_python(case_script(body), env=full_env, timeout=timeout))


def case_script(body: str) -> str:
    return CASE_PRELUDE + textwrap.dedent(body) + '\nprint("RESULT " + json.dumps(out))\n'


def assert_children_clean(kids: dict[str, Any]) -> int:
    """Every child answered, read zeros and saw a new generation; return how many forked."""
    assert kids, "no child was forked"
    for route, outcome in kids.items():
        assert "error" not in outcome, f"{route}: {outcome}"
        assert outcome["stale"] == 0, f"{route}: a child read {outcome['stale']} stale bytes"
        assert outcome["gen_moved"], f"{route}: generation() did not move in the child"
    return len(kids)
