"""The BSD ``minherit`` backend, run for real on Linux through a fake BSD C library.

This machine cannot run an OpenBSD, FreeBSD or NetBSD kernel, so the tests build
(with the system C compiler) a test-only shared library that fakes **only the BSD
libc function** ``minherit()``. Everything else is real: the backend's own code
(constants per OS, call sequence, errno handling, fork-probe verification and its
cache, selection and fallback) runs unchanged, and every fork is a real fork whose
child reads the memory the Linux kernel wiped. The backend loads the fake in place
of libc through its ``library`` argument or the test-only environment variable
``_INHERIT_TEST_MINHERIT_LIBRARY``.

The fake implements ``minherit`` with ``madvise``, answering like the OS named in
``INHERIT_SHIM_OS`` (``openbsd``, ``freebsd``, ``netbsd``):

* that OS's zero value (3 on OpenBSD/FreeBSD, 4 on NetBSD) -> ``MADV_WIPEONFORK`` (18);
* COPY (1) -> ``MADV_KEEPONFORK`` (19) then ``MADV_DOFORK`` (11); NONE (2) -> ``MADV_DONTFORK``;
* anything else -> EINVAL, as the BSD kernels do; in particular 3 on NetBSD, which is
  ``MAP_INHERIT_DONATE_COPY`` there and is refused by ``uvm_map_inherit``;
* ``INHERIT_SHIM_FAIL=EINVAL|EPERM`` makes the zero value fail so (an older release;
  OpenBSD and a page without PROT_WRITE), ``IGNORE`` makes it return 0 and do nothing
  (a silent no-op, which only the fork probe can catch); ``INHERIT_SHIM_FAIL_COPY``
  does the same to COPY.

It records what it received: the exported globals ``inherit_shim_last_value`` and
``inherit_shim_calls``, and one ``pid value`` line per call in the file named by
``INHERIT_SHIM_LOG``. With no OS named it fails every call with ENOSYS.

Tests that need a real BSD kernel carry the ``bsd`` marker.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import inherit
from inherit.backends import map_private
from inherit.backends import minherit as minherit_module
from inherit.backends.minherit import ZERO, MinheritBackend
from support import build_shared_library, run_python

SYSTEMS = ("openbsd", "freebsd", "netbsd")
PLATFORMS = {"openbsd": "openbsd7", "freebsd": "freebsd14", "netbsd": "netbsd10"}
ROUTES = ("os.fork", "libc.fork")
SENTINEL = b"\xa5\x5a\xc3\x3c" * 8

SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Linux advice numbers (include/uapi/asm-generic/mman-common.h). */
#define SHIM_MADV_DONTFORK 10
#define SHIM_MADV_DOFORK 11
#define SHIM_MADV_WIPEONFORK 18
#define SHIM_MADV_KEEPONFORK 19

int inherit_shim_last_value = -1;
int inherit_shim_calls = 0;

static int zero_value(const char *os) {
    if (!os) return -1;
    if (!strcmp(os, "openbsd") || !strcmp(os, "freebsd")) return 3;
    if (!strcmp(os, "netbsd")) return 4;
    return -1;
}

static void record(int value) {
    inherit_shim_last_value = value;
    inherit_shim_calls++;
    const char *log = getenv("INHERIT_SHIM_LOG");
    if (log && *log) {
        int fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0600);
        if (fd >= 0) {
            char line[64];
            int n = snprintf(line, sizeof line, "%ld %d\n", (long)getpid(), value);
            if (write(fd, line, (size_t)n) < 0) { /* best effort */ }
            close(fd);
        }
    }
}

/* 0: behave; -1: return 0 and do nothing; >0: fail with that errno. */
static int fault(const char *var) {
    const char *mode = getenv(var);
    if (!mode || !*mode) return 0;
    if (!strcmp(mode, "EINVAL")) return EINVAL;
    if (!strcmp(mode, "EPERM")) return EPERM;
    if (!strcmp(mode, "IGNORE")) return -1;
    return 0;
}

int minherit(void *addr, size_t len, int inherit) {
    record(inherit);
    int zero = zero_value(getenv("INHERIT_SHIM_OS"));
    if (zero < 0) { errno = ENOSYS; return -1; }
    if (inherit == zero) {
        int f = fault("INHERIT_SHIM_FAIL");
        if (f > 0) { errno = f; return -1; }
        if (f < 0) return 0;
        return madvise(addr, len, SHIM_MADV_WIPEONFORK);
    }
    if (inherit == 1) {  /* COPY */
        int f = fault("INHERIT_SHIM_FAIL_COPY");
        if (f > 0) { errno = f; return -1; }
        if (f < 0) return 0;
        if (madvise(addr, len, SHIM_MADV_KEEPONFORK) != 0) return -1;
        return madvise(addr, len, SHIM_MADV_DOFORK);
    }
    if (inherit == 2) return madvise(addr, len, SHIM_MADV_DONTFORK);  /* NONE */
    errno = EINVAL;  /* SHARE is not emulated; 3 on NetBSD is DONATE_COPY, which UVM refuses */
    return -1;
}
"""

# A library that is loadable but has no minherit symbol.
EMPTY_SOURCE = "int inherit_shim_not_minherit(void) { return 0; }\n"


# -- fixtures ---------------------------------------------------------------------------------
def _kernel_wipes_on_fork() -> bool:
    mem = map_private(mmap.PAGESIZE)
    try:
        mem.madvise(18)
    except (OSError, AttributeError):
        return False
    finally:
        mem.close()
    return True


@pytest.fixture(scope="module")
def shim() -> Path:
    """The fake BSD libc; skips where it cannot work (it is built on Linux's madvise)."""
    if not sys.platform.startswith("linux"):
        pytest.skip(f"the fake BSD libc is built on Linux's MADV_WIPEONFORK (this is {sys.platform})")
    if not _kernel_wipes_on_fork():
        pytest.skip("the fake BSD libc needs madvise(MADV_WIPEONFORK), which this kernel refuses")
    return build_shared_library(SHIM_SOURCE, "inherit-fake-bsd-libc")


@pytest.fixture(scope="module")
def empty_library() -> Path:
    if not sys.platform.startswith("linux"):
        pytest.skip("only needed where the fake BSD libc runs")
    return build_shared_library(EMPTY_SOURCE, "inherit-no-minherit")


@pytest.fixture
def shim_os(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set the fake's OS (and faults) in this process; getenv() in C sees os.environ."""

    def configure(system: str, fail: str = "", fail_copy: str = "") -> None:
        monkeypatch.setenv("INHERIT_SHIM_OS", system)
        for var, value in (("INHERIT_SHIM_FAIL", fail), ("INHERIT_SHIM_FAIL_COPY", fail_copy)):
            if value:
                monkeypatch.setenv(var, value)
            else:
                monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv("INHERIT_SHIM_LOG", raising=False)

    return configure


def last_value(library: Path) -> int:
    """What the fake received last (dlopen of the same path shares its globals)."""
    return ctypes.c_int.in_dll(ctypes.CDLL(str(library)), "inherit_shim_last_value").value


@pytest.fixture
def bsd_env(shim: Path, tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Environment for a subprocess that plays a BSD through the fake libc."""

    def make(system: str, backend_system: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            "_INHERIT_TEST_MINHERIT_LIBRARY": str(shim),
            "_INHERIT_TEST_MINHERIT_SYSTEM": backend_system or system,
            "INHERIT_SHIM_OS": system,
            "INHERIT_SHIM_FAIL": "",
            "INHERIT_SHIM_FAIL_COPY": "",
            "INHERIT_SHIM_LOG": str(tmp_path / "minherit.log"),
            "INHERIT_BACKEND": "",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
        }
        env.update(extra)
        return env

    return make


def run_as(platform: str, body: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``body`` with ``sys.platform`` reporting ``platform``; it must print one JSON object."""
    code = f"import sys\nsys.platform = {platform!r}\nimport json, inherit\n{textwrap.dedent(body)}"
    out = run_python(code, env=env)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def log_lines(tmp_path: Path) -> list[tuple[int, int]]:
    path = tmp_path / "minherit.log"
    if not path.exists():
        return []
    return [(int(p), int(v)) for p, v in (line.split() for line in path.read_text().splitlines())]


# -- the fake itself (so tests cannot pass vacuously) -------------------------------------------
@pytest.mark.parametrize("system", SYSTEMS)
def test_fake_libc_answers_like_the_os(shim: Path, shim_os: Callable[..., None], system: str) -> None:
    shim_os(system)
    lib = ctypes.CDLL(str(shim), use_errno=True)
    lib.minherit.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    mem = map_private(mmap.PAGESIZE)
    buffer = ctypes.c_char.from_buffer(mem)
    address = ctypes.addressof(buffer)
    try:
        assert lib.minherit(address, len(mem), ZERO[system][1]) == 0
        assert lib.minherit(address, len(mem), 1) == 0
        assert lib.minherit(address, len(mem), 99) == -1
        assert ctypes.get_errno() == errno.EINVAL
        if system == "netbsd":  # 3 is MAP_INHERIT_DONATE_COPY: refused, never a zero
            assert lib.minherit(address, len(mem), 3) == -1
            assert ctypes.get_errno() == errno.EINVAL
        assert last_value(shim) in (3, 99)
    finally:
        del buffer
        mem.close()


# -- the backend's real code, in this process, under real forks -----------------------------------
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("system", SYSTEMS)
def test_children_read_zeros(
    shim: Path, shim_os: Callable[..., None], fork_child: Callable[..., Any], system: str, route: str
) -> None:
    shim_os(system)
    backend = MinheritBackend(system=system, library=str(shim))
    mem = backend.allocate(2 * mmap.PAGESIZE)
    try:
        backend.mark_zero(mem)
        assert last_value(shim) == ZERO[system][1]
        mem[: len(SENTINEL)] = SENTINEL
        mem[-len(SENTINEL) :] = SENTINEL
        seen = fork_child(lambda: (mem[: len(SENTINEL)], mem[-len(SENTINEL) :]), route=route)
        assert seen == (bytes(len(SENTINEL)), bytes(len(SENTINEL)))
        assert mem[: len(SENTINEL)] == SENTINEL  # the parent keeps its bytes
    finally:
        mem.close()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("system", SYSTEMS)
def test_keep_gives_copies_again(
    shim: Path, shim_os: Callable[..., None], fork_child: Callable[..., Any], system: str, route: str
) -> None:
    shim_os(system)
    backend = MinheritBackend(system=system, library=str(shim))
    mem = backend.allocate(mmap.PAGESIZE)
    try:
        backend.mark_zero(mem)
        backend.mark_keep(mem)
        assert last_value(shim) == minherit_module.MAP_INHERIT_COPY
        mem[: len(SENTINEL)] = SENTINEL
        assert fork_child(lambda: mem[: len(SENTINEL)], route=route) == SENTINEL
    finally:
        mem.close()


@pytest.mark.parametrize(("system", "value"), [("openbsd", 3), ("freebsd", 3), ("netbsd", 4)])
def test_constants_per_os(system: str, value: int) -> None:
    assert ZERO[system][1] == value
    assert minherit_module.COPY[system][1] == 1
    assert minherit_module.NETBSD_MAP_INHERIT_DONATE_COPY == 3 != ZERO["netbsd"][1]


@pytest.mark.parametrize(("fail", "code"), [("EINVAL", errno.EINVAL), ("EPERM", errno.EPERM)])
def test_mark_zero_raises_oserror_with_the_errno(
    shim: Path, shim_os: Callable[..., None], fail: str, code: int
) -> None:
    shim_os("openbsd", fail=fail)
    backend = MinheritBackend(system="openbsd", library=str(shim))
    mem = backend.allocate(mmap.PAGESIZE)
    try:
        with pytest.raises(OSError) as info:
            backend.mark_zero(mem)
        assert info.value.errno == code
    finally:
        mem.close()  # the pointer given to C was released: closing works


def test_netbsd_is_never_given_openbsds_value(shim: Path, shim_os: Callable[..., None]) -> None:
    """On NetBSD 3 is DONATE_COPY: the backend passes 4, and 3 would be refused, not misread."""
    shim_os("netbsd")
    right = MinheritBackend(system="netbsd", library=str(shim))
    wrong = MinheritBackend(system="openbsd", library=str(shim))
    mem = right.allocate(mmap.PAGESIZE)
    try:
        right.mark_zero(mem)
        assert last_value(shim) == 4
        with pytest.raises(OSError) as info:
            wrong.mark_zero(mem)
        assert (last_value(shim), info.value.errno) == (3, errno.EINVAL)
    finally:
        mem.close()


@pytest.mark.parametrize("system", ["dragonfly", "darwin", "linux", "win"])
def test_no_zero_value_is_unavailable_before_any_call(system: str) -> None:
    backend = MinheritBackend(system=system, library="/nonexistent/never-loaded.so")
    with pytest.raises(inherit.BackendUnavailable) as info:
        backend.verify()
    assert "cannot load" not in info.value.reason  # refused before loading anything
    mem = backend.allocate(mmap.PAGESIZE)
    try:
        with pytest.raises(OSError):
            backend.mark_zero(mem)
    finally:
        mem.close()


def test_dragonfly_and_macos_reasons_name_the_headers() -> None:
    for system, header in (("dragonfly", "sys/vm/vm.h"), ("darwin", "vm_inherit.h")):
        with pytest.raises(inherit.BackendUnavailable, match=header.replace(".", r"\.")):
            MinheritBackend(system=system).verify()


def test_missing_symbol_is_unavailable(empty_library: Path) -> None:
    with pytest.raises(inherit.BackendUnavailable, match="no minherit"):
        MinheritBackend(system="openbsd", library=str(empty_library)).verify()


@pytest.mark.linux
def test_linux_libc_has_no_minherit() -> None:
    """The real C library here lacks the symbol: the backend says so instead of crashing."""
    with pytest.raises(inherit.BackendUnavailable, match="C library has no minherit"):
        MinheritBackend(system="openbsd").verify()


def test_unloadable_library_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(inherit.BackendUnavailable, match="cannot load"):
        MinheritBackend(system="freebsd", library=str(tmp_path / "missing.so")).verify()


def test_environment_selects_library_and_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(minherit_module.LIBRARY_ENV, "/some/libfake.so")
    monkeypatch.setenv(minherit_module.SYSTEM_ENV, "netbsd")
    backend = MinheritBackend()
    assert (backend.system, backend.library) == ("netbsd", "/some/libfake.so")
    explicit = MinheritBackend(system="openbsd", library="/other.so")
    assert (explicit.system, explicit.library) == ("openbsd", "/other.so")


@pytest.mark.parametrize(
    ("platform", "system"),
    [
        ("openbsd7", "openbsd"),
        ("freebsd14", "freebsd"),
        ("netbsd10", "netbsd"),
        ("darwin", "darwin"),
        ("dragonfly6", "dragonfly"),
        ("linux", "linux"),
    ],
)
def test_system_of_platform(platform: str, system: str) -> None:
    assert minherit_module.system_of(platform) == system


# -- verification, selection and fallback, in fresh processes playing a BSD ----------------------
def test_probe_helper_can_import_this_installation(bsd_env: Callable[..., dict[str, str]]) -> None:
    """The fork probe's helper process must import the package, and cffi, from where the caller did.

    The helper runs ``python -I -S``, so it sees only the import path it is handed. An
    editable install (``backends/`` outside ``inherit/`` in the source tree) and a cffi
    from another directory than the package (OS-packaged cffi on a BSD) both broke it once.
    """
    env = bsd_env("openbsd")
    code = """
    import json
    from inherit.backends._probe import fork_probe
    ok, v = fork_probe("minherit")
    print(json.dumps([ok, v.detail]))
    """
    out = run_python(code, env=env)
    ok, detail = json.loads(out.stdout)
    assert ok, detail


def test_probe_helper_finds_cffi_installed_elsewhere(
    bsd_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """The package in one directory (the layout a wheel installs), cffi in another."""
    import inherit.backends

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    root = tmp_path / "elsewhere"
    shutil.copytree(Path(inherit.__file__).parent, root / "inherit", ignore=ignore)
    if not (root / "inherit" / "backends").is_dir():  # a source checkout keeps it beside inherit/
        shutil.copytree(Path(inherit.backends.__file__).parent, root / "inherit" / "backends", ignore=ignore)
    code = """
    import json, inherit, _cffi_backend
    from inherit.backends._probe import fork_probe
    ok, v = fork_probe("minherit")
    print(json.dumps([ok, v.detail, inherit.__file__, _cffi_backend.__file__]))
    """
    out = run_python(code, env={**bsd_env("netbsd"), "PYTHONPATH": str(root)})
    ok, detail, package, cffi = json.loads(out.stdout)
    assert Path(package).is_relative_to(root) and not Path(cffi).is_relative_to(root)
    assert ok, detail


@pytest.mark.parametrize("system", SYSTEMS)
def test_selected_and_children_read_zeros_through_the_api(
    bsd_env: Callable[..., dict[str, str]], system: str
) -> None:
    body = """
    from inherit.testing import run_in_child
    r = inherit.zero_on_fork(32)
    big = inherit.zero_on_fork(3 * 4096)
    r[:] = b"k" * 32
    big[:8] = b"bigbytes"
    g = inherit.generation()
    seen = {}
    for route in ("os.fork", "libc.fork", "multiprocessing"):
        seen[route] = run_in_child(lambda: (bytes(r), bytes(big[:8]), inherit.generation() != g), route=route)
    inherit.keep_on_fork(r)
    inherit.keep_on_fork(big)
    kept = run_in_child(lambda: (bytes(r), bytes(big[:8])), route="libc.fork")
    d = inherit.diagnostics()
    print(json.dumps({"backend": inherit.backend(), "seen": {k: [v[0].hex(), v[1].hex(), v[2]]
                      for k, v in seen.items()}, "kept": [kept[0].hex(), kept[1].hex()],
                      "parent": bytes(r).hex(), "verification": d["verification"], "refused": d["refused"]}))
    """
    result = run_as(PLATFORMS[system], body, bsd_env(system))
    assert result["backend"] == "minherit"
    assert result["refused"] == {}
    assert result["verification"] == "fork probe"
    for route, (small, big, new_generation) in result["seen"].items():
        assert (small, big, new_generation) == ((bytes(32)).hex(), bytes(8).hex(), True), route
    assert result["kept"] == [(b"k" * 32).hex(), b"bigbytes".hex()]
    assert result["parent"] == (b"k" * 32).hex()


def test_right_constant_reaches_libc_per_os(bsd_env: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    """Every call the backend makes, in the caller and in the probe helper, uses that OS's values."""
    for system in SYSTEMS:
        log = tmp_path / "minherit.log"
        log.unlink(missing_ok=True)
        # A verdict cache of its own: the cache key cannot tell the faked systems apart.
        env = bsd_env(system, XDG_CACHE_HOME=str(tmp_path / f"cache-{system}"))
        body = """
        r = inherit.zero_on_fork(8000)
        inherit.keep_on_fork(r)
        import os
        print(json.dumps({"backend": inherit.backend(), "pid": os.getpid()}))
        """
        result = run_as(PLATFORMS[system], body, env)
        assert result["backend"] == "minherit"
        calls = log_lines(tmp_path)
        values = {v for _, v in calls}
        assert values == {ZERO[system][1], 1}, (system, calls)
        helper_calls = [v for pid, v in calls if pid != result["pid"]]
        assert helper_calls == [ZERO[system][1]], "the probe helper marked one page zero"


def test_verdict_is_cached(bsd_env: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    body = """
    import os
    d = inherit.diagnostics()
    print(json.dumps({"pid": os.getpid(), "verification": d["verification"], "cache": d["cache"],
                      "detail": d["verification_detail"]}))
    """
    env = bsd_env("freebsd")
    first = run_as("freebsd14", body, env)
    assert first["verification"] == "fork probe", first
    assert first["cache"] and Path(first["cache"]).is_file()
    assert Path(first["cache"]).is_relative_to(tmp_path / "cache")
    assert "zeros" in first["detail"]
    (tmp_path / "minherit.log").unlink()
    second = run_as("freebsd14", body, env)
    assert second["verification"].startswith("fork probe (cached")
    assert second["cache"] == first["cache"]
    assert {pid for pid, _ in log_lines(tmp_path)} == {second["pid"]}, "no probe helper ran"


def test_silent_no_op_is_caught_by_the_probe(bsd_env: Callable[..., dict[str, str]]) -> None:
    """minherit() returning 0 without effect (an emulator): only a real fork shows it."""
    body = 'print(json.dumps({"backend": inherit.backend(), "refused": inherit.diagnostics()["refused"]}))'
    result = run_as("openbsd7", body, bsd_env("openbsd", INHERIT_SHIM_FAIL="IGNORE"))
    assert result["backend"] == "getpid"
    assert "still read the parent's bytes" in result["refused"]["minherit"]


FALLBACKS = [
    pytest.param(
        "openbsd", "openbsd", {"INHERIT_SHIM_FAIL": "EPERM"}, ["EPERM", "PROT_WRITE"], id="openbsd-EPERM"
    ),
    pytest.param(
        "freebsd",
        "freebsd",
        {"INHERIT_SHIM_FAIL": "EINVAL"},
        ["EINVAL", "older than 12.0"],
        id="freebsd-old-EINVAL",
    ),
    pytest.param(
        "netbsd",
        "netbsd",
        {"INHERIT_SHIM_FAIL": "EINVAL"},
        ["EINVAL", "older than 7.0"],
        id="netbsd-old-EINVAL",
    ),
    pytest.param("netbsd", "openbsd", {}, ["MAP_INHERIT_ZERO=3", "EINVAL"], id="wrong-value-refused"),
    pytest.param(
        "openbsd", "openbsd", {"INHERIT_SHIM_FAIL_COPY": "EINVAL"}, ["COPY=1", "EINVAL"], id="copy-refused"
    ),
    pytest.param(
        "openbsd",
        "openbsd",
        {"_INHERIT_TEST_MINHERIT_LIBRARY": "EMPTY"},
        ["no minherit() symbol"],
        id="missing-symbol",
    ),
    pytest.param(
        "openbsd",
        "openbsd",
        {"_INHERIT_TEST_MINHERIT_LIBRARY": ""},
        ["the C library has no minherit() symbol"],
        id="libc-without-minherit",
    ),
]


REQUEST_MINHERIT = """
import inherit
try:
    inherit.backend()
except inherit.BackendUnavailable as e:
    print("unavailable:", e.reason)
"""


@pytest.mark.parametrize(("shim_system", "backend_system", "extra", "words"), FALLBACKS)
def test_refusal_falls_back_to_getpid_with_the_reason(
    bsd_env: Callable[..., dict[str, str]],
    empty_library: Path,
    shim_system: str,
    backend_system: str,
    extra: dict[str, str],
    words: list[str],
) -> None:
    extra = {k: (str(empty_library) if v == "EMPTY" else v) for k, v in extra.items()}
    env = bsd_env(shim_system, backend_system=backend_system, **extra)
    body = """
    from inherit.testing import run_in_child
    r = inherit.zero_on_fork(16)
    r[:] = b"s" * 16
    child = run_in_child(lambda: bytes(r), route="os.fork")
    d = inherit.diagnostics()
    print(json.dumps({"backend": inherit.backend(), "refused": d["refused"], "reason": d["reason"],
                      "child": child.hex()}))
    """
    result = run_as(PLATFORMS[backend_system], body, env)
    assert result["backend"] == "getpid"
    reason = result["refused"]["minherit"]
    for word in words:
        assert word in reason, reason
    assert reason in result["reason"]
    assert result["child"] == bytes(16).hex()  # the fallback still wipes in os.fork children

    requested = run_python(
        f"import sys; sys.platform = {PLATFORMS[backend_system]!r}\n{REQUEST_MINHERIT}",
        env={**env, "INHERIT_BACKEND": "minherit"},
    )
    assert requested.returncode == 0, requested.stderr
    assert requested.stdout.startswith("unavailable:"), requested.stdout
    assert all(word in requested.stdout for word in words)


def test_requested_minherit_works_when_it_works(bsd_env: Callable[..., dict[str, str]]) -> None:
    body = (
        'd = inherit.diagnostics()\nprint(json.dumps({"backend": inherit.backend(), "reason": d["reason"]}))'
    )
    result = run_as("netbsd10", body, bsd_env("netbsd", INHERIT_BACKEND="minherit"))
    assert result == {"backend": "minherit", "reason": "requested by INHERIT_BACKEND"}


@pytest.mark.parametrize("platform", ["dragonfly6", "darwin"])
def test_no_zero_value_platforms_use_getpid(bsd_env: Callable[..., dict[str, str]], platform: str) -> None:
    env = bsd_env("openbsd", _INHERIT_TEST_MINHERIT_SYSTEM="")  # the backend names the patched platform
    body = (
        'print(json.dumps({"backend": inherit.backend(), "candidates": inherit.diagnostics()["candidates"]}))'
    )
    assert run_as(platform, body, env) == {"backend": "getpid", "candidates": ["getpid"]}
    requested = run_python(
        f"import sys; sys.platform = {platform!r}\n{REQUEST_MINHERIT}",
        env={**env, "INHERIT_BACKEND": "minherit"},
    )
    assert requested.stdout.startswith("unavailable:"), requested.stdout + requested.stderr
    assert "no zero value" in requested.stdout or "only SHARE, COPY and NONE" in requested.stdout


# -- a real BSD kernel ------------------------------------------------------------------------------
@pytest.mark.bsd
def test_real_bsd_backend_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(minherit_module.LIBRARY_ENV, raising=False)
    monkeypatch.delenv(minherit_module.SYSTEM_ENV, raising=False)
    verification = MinheritBackend().verify()
    assert verification.method.startswith("fork probe")


@pytest.mark.bsd
@pytest.mark.parametrize("route", ROUTES)
def test_real_bsd_children_read_zeros(fork_child: Callable[..., Any], route: str) -> None:
    backend = MinheritBackend()
    mem = backend.allocate(mmap.PAGESIZE)
    try:
        backend.mark_zero(mem)
        mem[: len(SENTINEL)] = SENTINEL
        assert fork_child(lambda: mem[: len(SENTINEL)], route=route) == bytes(len(SENTINEL))
        backend.mark_keep(mem)
        assert fork_child(lambda: mem[: len(SENTINEL)], route=route) == SENTINEL
    finally:
        mem.close()


@pytest.mark.bsd
def test_real_bsd_selects_minherit() -> None:
    if os.environ.get("INHERIT_BACKEND", "minherit") != "minherit":
        pytest.skip(f"INHERIT_BACKEND={os.environ['INHERIT_BACKEND']} asks for another backend")
    assert inherit.backend() == "minherit"


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests in this process never inherit the test-only switches from the outside."""
    monkeypatch.delenv(minherit_module.LIBRARY_ENV, raising=False)
    monkeypatch.delenv(minherit_module.SYSTEM_ENV, raising=False)
    yield
