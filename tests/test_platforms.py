"""Import and the getpid fallback on platforms this machine is not: macOS, DragonFly, Windows.

Each case runs in a fresh interpreter that sets ``sys.platform`` before importing
``inherit``, so the library's one dispatch point (the table in ``inherit.backends``) and every
platform check see that platform. The kernel underneath is still this one: forks
are real forks, and ``generation()``/regions behave as the getpid backend makes
them behave on a real Mac.

What a patched ``sys.platform`` cannot simulate is said where it matters; for
Windows that is most of it (see :func:`test_windows_like_run`).
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from inherit import backends
from support import run_python

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="the simulations fork")


def run_as(
    platform: str, body: str, tmp_path: Path, env: dict[str, str] | None = None, prelude: str = ""
) -> dict[str, Any]:
    """Run ``body`` as if on ``platform``; it must print one JSON object last."""
    code = f"import sys\n{textwrap.dedent(prelude)}\nsys.platform = {platform!r}\n{textwrap.dedent(body)}"
    full_env = {
        "INHERIT_BACKEND": "",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HOME": str(tmp_path / "home"),  # platformdirs' macOS cache dir lives under HOME
    }
    full_env.update(env or {})
    out = run_python(code, env=full_env)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- dispatch ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux", ["madvise", "getpid"]),
        ("openbsd7", ["minherit", "getpid"]),
        ("freebsd14", ["minherit", "getpid"]),
        ("netbsd10", ["minherit", "getpid"]),
        ("darwin", ["getpid"]),
        ("dragonfly6", ["getpid"]),
        ("win32", ["getpid"]),
        ("cygwin", ["getpid"]),
        ("emscripten", ["getpid"]),
    ],
)
def test_candidates_per_platform(platform: str, expected: list[str]) -> None:
    assert backends.candidates(platform) == expected


def test_candidates_default_to_this_platform() -> None:
    assert backends.candidates() == backends.candidates(sys.platform)
    assert backends.candidates()[-1] == "getpid"


# -- import hygiene ------------------------------------------------------------------------------
IMPORT_PROBE = """
import os, subprocess
forks = []
os.register_at_fork(before=lambda: forks.append("os.fork"))
def refuse(name):
    def call(*args, **kwargs):
        forks.append(name)
        raise RuntimeError(name + " at import")
    return call
for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
    if hasattr(os, name):
        setattr(os, name, refuse("os." + name))
subprocess.Popen.__init__ = refuse("subprocess.Popen")
before = set(sys.modules)
import inherit
import inherit.backends
loaded = sorted(set(sys.modules) - before)
import json
from inherit import _runtime
print(json.dumps({"loaded": loaded, "forks": forks, "selected": _runtime._selection is not None}))
"""


@pytest.mark.parametrize("platform", [sys.platform, "darwin", "openbsd7", "netbsd10", "dragonfly6"])
def test_import_is_cheap_and_never_forks(platform: str, tmp_path: Path) -> None:
    result = run_as(platform, IMPORT_PROBE, tmp_path)
    heavy = [
        m
        for m in result["loaded"]
        if m in ("cffi", "_cffi_backend", "random", "subprocess")
        or m.startswith("cffi.")
        or m == "inherit._native"
    ]
    assert heavy == [], result["loaded"]
    assert result["forks"] == []
    assert result["selected"] is False, "the backend is chosen on first use, not at import"


# -- macOS ---------------------------------------------------------------------------------------
MAC_BODY = """
import json, inherit
from inherit.testing import run_in_child
r = inherit.zero_on_fork(32)
big = inherit.zero_on_fork(20000)
r[:] = b"m" * 32
big[-4:] = b"tail"
g = inherit.generation()
assert inherit.generation() == g
children = {}
for route in ("os.fork", "libc.fork", "multiprocessing"):
    children[route] = run_in_child(
        lambda: [bytes(r).hex(), bytes(big[-4:]).hex(), inherit.generation() != g], route=route
    )
kept = inherit.keep_on_fork(r)
copy = run_in_child(lambda: bytes(r).hex(), route="libc.fork")
d = inherit.diagnostics()
print(json.dumps({"backend": inherit.backend(), "candidates": d["candidates"], "children": children,
                  "copy": copy, "parent": bytes(r).hex(), "kernel_wipes": d["kernel_wipes"],
                  "generation_stable": inherit.generation() == g}))
"""


def test_macos_uses_getpid_and_children_read_zeros(tmp_path: Path) -> None:
    result = run_as("darwin", MAC_BODY, tmp_path)
    assert result["backend"] == "getpid"
    assert result["candidates"] == ["getpid"]
    assert result["kernel_wipes"] is False
    for route, (small, big, moved) in result["children"].items():
        assert (small, big, moved) == (bytes(32).hex(), bytes(4).hex(), True), route
    assert result["copy"] == (b"m" * 32).hex()  # keep_on_fork: children inherit a copy again
    assert result["parent"] == (b"m" * 32).hex()
    assert result["generation_stable"] is True


@pytest.mark.parametrize(
    ("platform", "requested", "words"),
    [
        ("darwin", "minherit", "no zero value"),
        ("darwin", "madvise", "only on Linux"),
        ("dragonfly6", "minherit", "only SHARE, COPY and NONE"),
    ],
)
def test_requesting_a_kernel_backend_where_there_is_none_raises(
    platform: str, requested: str, words: str, tmp_path: Path
) -> None:
    body = """
    import json, inherit
    try:
        inherit.backend()
    except inherit.BackendUnavailable as exc:
        print(json.dumps({"error": type(exc).__name__, "reason": exc.reason}))
    else:
        print(json.dumps({"error": None}))
    """
    result = run_as(platform, body, tmp_path, env={"INHERIT_BACKEND": requested})
    assert result["error"] == "BackendUnavailable"
    assert words in result["reason"]


def test_dragonfly_uses_getpid(tmp_path: Path) -> None:
    body = """
    import json, inherit
    from inherit.testing import run_in_child
    r = inherit.zero_on_fork(16)
    r[:] = b"d" * 16
    print(json.dumps({"backend": inherit.backend(), "child": run_in_child(lambda: bytes(r).hex())}))
    """
    assert run_as("dragonfly6", body, tmp_path) == {"backend": "getpid", "child": bytes(16).hex()}


# -- Windows, as far as Linux can pretend ------------------------------------------------------------
WINDOWS_PRELUDE = """
import os, mmap, types
# Windows has no fork and no at-fork hooks, and mmap has no POSIX flags there.
for name in ("fork", "forkpty", "register_at_fork"):
    if hasattr(os, name):
        delattr(os, name)
for name in [n for n in dir(mmap) if n.startswith(("MAP_", "PROT_", "MADV_"))]:
    delattr(mmap, name)
# Modules Windows has but a patched Linux interpreter cannot import after the switch
# (subprocess imports _winapi when sys.platform is "win32").
import subprocess, platform, tempfile, shutil, hashlib, json
# Any dlopen is a failure: replace the generated FFI module before inherit can load it.
dlopens = []
class RefusingFFI:
    error = OSError
    def dlopen(self, name):
        dlopens.append(name)
        raise AssertionError("dlopen called on Windows")
    def __getattr__(self, name):
        dlopens.append("ffi." + name)
        raise AssertionError("the FFI was used on Windows: " + name)
native = types.ModuleType("inherit._native")
native.ffi = RefusingFFI()
sys.modules["inherit._native"] = native
# pathlib cannot make a WindowsPath on Linux; let Path() keep making POSIX paths.
import pathlib
pathlib.WindowsPath = pathlib.PosixPath
os.name = "nt"
"""

WINDOWS_BODY = """
import json, inherit
from inherit import backends
from inherit.backends._ffi import libc
from inherit.backends.minherit import MinheritBackend
results = {"candidates": backends.candidates("win32"), "default_candidates": backends.candidates()}
results["backend"] = inherit.backend()
r = inherit.zero_on_fork(64)
r[:] = bytes(range(64))
big = inherit.zero_on_fork(100000)
big[:3] = b"win"
s = inherit.zero_on_fork(32, secret=True)
s[:] = b"s" * 32
g = inherit.generation()
results["generation_constant"] = all(inherit.generation() == g for _ in range(100))
results["regions"] = [bytes(r) == bytes(range(64)), bytes(big[:3]) == b"win", s.locked]
inherit.keep_on_fork(r)
inherit.keep_on_fork(big)
results["after_keep"] = bytes(r) == bytes(range(64))
r.close(); big.close(); s.close()
results["libc"] = libc() is None
try:
    MinheritBackend().verify()
except inherit.BackendUnavailable as exc:
    results["minherit"] = exc.reason
try:
    backends.make("madvise").verify()
except inherit.BackendUnavailable as exc:
    results["madvise"] = exc.reason
results["diagnostics_backend"] = inherit.diagnostics()["backend"]
results["dlopens"] = dlopens
print(json.dumps(results))
"""


def test_windows_like_run(tmp_path: Path) -> None:
    """A Linux interpreter dressed as Windows: sys.platform "win32", os.name "nt", no fork.

    Checked: import works; dispatch offers only getpid; regions (plain memory on the
    ``os.name == "nt"`` mapping path, with every POSIX mmap constant removed), secret
    regions, keep_on_fork and close work; ``generation()`` is constant; no path
    guarded for ``os.name == "nt"`` calls ``dlopen`` or touches the FFI at all; kernel
    backends refuse with a reason.

    Not simulated: Windows' own mmap (pagefile-backed, no madvise), its ``nt`` module
    and the stdlib modules that import it or ``_winapi`` (imported before the switch,
    as they work there), ``WindowsPath`` (``Path()`` keeps making POSIX paths), DLL
    loading, spawn-only multiprocessing, and platformdirs' Windows paths (it sees no
    Windows API here). Only a Windows CI runner shows those.
    """
    result = run_as("win32", WINDOWS_BODY, tmp_path, prelude=WINDOWS_PRELUDE)
    assert result["candidates"] == result["default_candidates"] == ["getpid"]
    assert result["backend"] == result["diagnostics_backend"] == "getpid"
    assert result["generation_constant"] is True
    assert result["regions"] == [True, True, False]  # a secret region cannot be mlock()ed there
    assert result["after_keep"] is True
    assert result["libc"] is True
    assert "Windows" in result["minherit"]
    assert "only on Linux" in result["madvise"]
    assert result["dlopens"] == []


CONCEAL = r"""
import json, mmap, sys
# This machine has no OpenBSD: give its mmap module the constant OpenBSD's has,
# pointing at a flag Linux accepts harmlessly for anonymous memory (MAP_NORESERVE,
# 0x4000), and record what the library passes to mmap(). The kernel behaviour (pages
# left out of core dumps) runs only on a real OpenBSD, in the BSD CI jobs.
mmap.MAP_CONCEAL = 0x4000
for name in ("MADV_DONTDUMP", "MADV_NOCORE"):  # OpenBSD has neither
    if hasattr(mmap, name):
        delattr(mmap, name)
real = mmap.mmap
seen = []
class Recording(real):
    def __new__(cls, *args, **kwargs):
        seen.append(kwargs.get("flags", 0))
        return real.__new__(cls, *args, **kwargs)
mmap.mmap = Recording
sys.platform = "openbsd7"
from inherit.backends import _secret
import inherit.backends._secret as secret_module
secret_module._LINUX = False
from inherit.backends import make
backend = make("getpid")
mem, address = _secret.map_secret(backend, 4096)
excluded, locked = _secret.protect(mem, address)
plain = backend.allocate(4096)
print(json.dumps({"secret_flags": seen[0], "plain_flags": seen[-1], "excluded": excluded,
                  "conceal": mmap.MAP_CONCEAL}))
"""


@pytest.mark.linux
def test_secret_memory_is_mapped_with_map_conceal_where_it_exists() -> None:
    """OpenBSD has no MADV_DONTDUMP: secret pages get MAP_CONCEAL at mmap() time (faked constant)."""
    proc = run_python(CONCEAL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["secret_flags"] & out["conceal"], out
    assert not out["plain_flags"] & out["conceal"], "ordinary regions must not be concealed"
    assert out["excluded"] is True, out
