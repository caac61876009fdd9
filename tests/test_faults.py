"""Fault injection at selection and after it: every fault ends in a working fallback or a clear exception.

A stale byte in a child is a security bug and so is a crash, so each case runs
in a fresh interpreter (the LD_PRELOAD shim from ``faultshim`` or a resource
limit changes what libc answers) and checks, through the public API, that
children made by several routes read zeros and that the parent's bytes are
intact. Each case prints one ``FAULT <case>: <outcome>`` line (``pytest -s``
or ``-rP`` shows them). Real kernel confinement (seccomp, a hidden /proc) is in
test_confinement.py; INHERIT_BACKEND and import hygiene in test_selection.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from faultshim import fault_env
from support import REFUSALS, assert_children_clean, case_script, run_case, run_python

pytestmark = pytest.mark.linux


def report(case: str, outcome: str) -> None:
    print(f"FAULT {case}: {outcome}")


def host_backend() -> str:
    """The backend an unfaulted fresh process picks here (what a correct probe must agree with)."""
    global _HOST_BACKEND
    if _HOST_BACKEND is None:
        proc = run_python("import inherit; print(inherit.backend())", env={"INHERIT_BACKEND": ""})
        assert proc.returncode == 0, proc.stderr
        _HOST_BACKEND = proc.stdout.strip()
    return _HOST_BACKEND


_HOST_BACKEND: str | None = None


# -- madvise refused or ignored at selection ---------------------------------


@pytest.mark.parametrize("mode", list(REFUSALS))
def test_refused_madvise_falls_back_to_getpid(mode: str, tmp_path: Path) -> None:
    """Refused (errno) or accepted-but-ignored advice: getpid, and every child still reads zeros."""
    body = """
out["selection"] = selection()
regions = [filled(32), filled(8192), filled(32, secret=True)]
out["children"] = children(regions)
out["intact"] = intact(regions)
"""
    result = run_case(body, {**fault_env(madvise=mode), "XDG_CACHE_HOME": str(tmp_path)})
    sel = result["selection"]
    assert sel["backend"] == "getpid", sel
    assert "madvise refused" in (sel["reason"] or ""), sel
    assert REFUSALS[mode] in sel["refused"]["madvise"], sel
    forks = assert_children_clean(result["children"])
    assert result["intact"], "the parent's own bytes changed"
    report(
        f"madvise={mode}",
        f"{sel['reason']}; {forks} children (routes {', '.join(result['children'])}) read 0 stale bytes",
    )


@pytest.mark.parametrize("mode", list(REFUSALS))
def test_refused_madvise_when_requested_is_a_clear_error(mode: str, tmp_path: Path) -> None:
    """INHERIT_BACKEND=madvise must not silently fall back: BackendUnavailable, and nothing is handed out."""
    body = """
for call in (inherit.backend, lambda: inherit.zero_on_fork(32)):
    try:
        call()
    except Exception as exc:
        out["error"] = describe(exc)
        out["is_backend_unavailable"] = isinstance(exc, inherit.BackendUnavailable)
        out.setdefault("failures", 0)
        out["failures"] += 1
"""
    env = {**fault_env(madvise=mode), "XDG_CACHE_HOME": str(tmp_path)}
    result = run_case(body, {**env, "INHERIT_BACKEND": "madvise"})
    assert result.get("is_backend_unavailable") and result["failures"] == 2, result
    assert "madvise" in result["error"]["message"] and REFUSALS[mode] in result["error"]["message"], result
    report(
        f"madvise={mode} with INHERIT_BACKEND=madvise", f"BackendUnavailable: {result['error']['message']}"
    )


# -- madvise failing after verification ---------------------------------------


def test_madvise_failing_after_verification_never_hands_out_unmarked_memory(tmp_path: Path) -> None:
    """WIPEONFORK calls 1-3 succeed (the verified flag page, a large region, one arena), then ENOMEM.

    (If selection ever makes more WIPEONFORK calls, the first two allocations
    below fail and the process exits with their traceback: adjust the budget.)

    Any allocation that needs a new mapping must raise; allocations served by
    the existing arena keep working; nothing handed out is ever unmarked, and a
    refused KEEPONFORK leaves the region zero-on-fork.
    """
    body = """
from inherit import _region
out["selection"] = selection()
large = filled(8192)            # WIPEONFORK call 2: its own mapping
small = [filled(32)]            # call 3: the first 32-byte arena
failures = {}
for label, size, secret in [("large", 8192, False), ("new pool 2048", 2048, False),
                            ("secret", 32, True)]:
    try:
        inherit.zero_on_fork(size, secret=secret)
        failures[label] = None
    except Exception as exc:
        failures[label] = describe(exc)
# Fill the arena: it serves 32-byte slots until it is full, then a new one is needed.
try:
    while True:
        small.append(filled(32))
except Exception as exc:
    failures["arena full"] = describe(exc)
out["served_by_first_arena"] = len(small)
out["failures"] = failures
out["zero_arenas"] = _region.stats()["zero_arenas"]
# No half state: a slot freed by close() is handed out again, still marked.
small.pop().close()
again = filled(32)
small.append(again)
try:
    inherit.keep_on_fork(large)
    out["keep_large"] = None
except Exception as exc:
    out["keep_large"] = describe(exc)
out["large_on_fork"] = large.on_fork
regions = [large, small[0], small[len(small) // 2], again]
out["children"] = children(regions)
out["intact"] = intact(regions) and intact(small)
"""
    result = run_case(
        body, {**fault_env(madvise="ENOMEM", madvise_after="3"), "XDG_CACHE_HOME": str(tmp_path)}
    )
    assert result["selection"]["backend"] == "madvise", result["selection"]
    failures = result["failures"]
    for label, failure in failures.items():
        assert failure is not None, f"{label}: a new mapping was handed out although marking it failed"
        assert failure["type"] in ("OSError", "MemoryError"), failures
    assert result["served_by_first_arena"] > 1
    assert result["zero_arenas"] == 2, "a failed arena was left registered"  # the large one + the first arena
    assert result["keep_large"] is not None and result["large_on_fork"] == "zero", result
    assert_children_clean(result["children"])
    assert result["intact"]
    report(
        "madvise ENOMEM after verification (new mapping)",
        "; ".join(f"{k}: {v['type']} {v['message']}" for k, v in failures.items())
        + f"; the existing arena kept serving ({result['served_by_first_arena']} regions) and children "
        "read 0 stale bytes",
    )
    report(
        "madvise KEEPONFORK refused (ENOMEM)",
        f"keep_on_fork raised {result['keep_large']['type']}; region stays on_fork='zero'",
    )


def test_the_verified_page_is_the_flag_page(tmp_path: Path) -> None:
    """Selection makes one WIPEONFORK call, on the page it then uses for detection.

    With one call allowed, selection succeeds and detection works on every route,
    and the first region (which needs a new mapping) raises instead of being handed
    out unmarked.
    """
    body = """
out["selection"] = selection()
gen = inherit.generation()
out["moved"] = {route: run_in_child(lambda: inherit.generation() != gen, route=route) for route in ROUTES}
try:
    inherit.zero_on_fork(32)
    out["region"] = None
except Exception as exc:
    out["region"] = describe(exc)
"""
    result = run_case(
        body, {**fault_env(madvise="ENOMEM", madvise_after="1"), "XDG_CACHE_HOME": str(tmp_path)}
    )
    assert result["selection"]["backend"] == "madvise", result["selection"]
    assert all(result["moved"].values()), result["moved"]
    assert result["region"] is not None and result["region"]["type"] in ("OSError", "MemoryError"), result
    report(
        "madvise ENOMEM after the flag page", f"detection works; first region: {result['region']['message']}"
    )


# -- /proc missing or unreadable -----------------------------------------------


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package laid out as a wheel installs it (``inherit/backends/`` inside ``inherit/``).

    The fork probe's helper runs with ``-I`` and the caller's sys.path; this
    copy, found first through PYTHONPATH, checks the probe and its cache in the
    installed layout whatever the checkout (editable or not) looks like.
    """
    import inherit.backends

    site = tmp_path_factory.mktemp("site")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = Path(inherit.__file__).resolve().parent
    shutil.copytree(package, site / "inherit", ignore=ignore)
    backends = Path(inherit.backends.__file__).resolve().parent
    if backends != package / "backends":
        shutil.copytree(backends, site / "inherit" / "backends", ignore=ignore, dirs_exist_ok=True)
    return site


def proc_env(proc: str, cache: Path, site: Path | None = None, **faults: str) -> dict[str, str]:
    env = {**fault_env(proc=proc, **faults), "XDG_CACHE_HOME": str(cache)}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


def smaps_hidden(cache: Path, site: Path | None = None) -> dict[str, str]:
    """Only smaps unreadable: the fork probe decides, and its positive verdict may be cached."""
    return proc_env("ENOENT", cache, site, proc_only="smaps")


PROBE_BODY = """
out["file"] = inherit.__file__
out["selection"] = selection()
regions = [filled(32), filled(8192), filled(32, secret=True)]
out["children"] = children(regions)
out["intact"] = intact(regions)
"""


@pytest.mark.parametrize("proc", ["ENOENT", "EACCES"])
def test_hidden_proc_in_this_environment(proc: str, tmp_path: Path) -> None:
    """/proc/self unreadable, package as installed here: the probe decides as the host would."""
    result = run_case(PROBE_BODY, proc_env(proc, tmp_path))
    assert_children_clean(result["children"])
    assert result["intact"]
    sel = result["selection"]
    report(
        f"proc={proc} (this install)",
        f"{sel['backend']} via {sel['verification']}: {sel['reason']}; children read 0 stale bytes",
    )
    assert sel["backend"] == host_backend(), sel
    if sel["backend"] != "getpid":
        assert (sel["verification"] or "").startswith("fork probe"), sel


@pytest.mark.parametrize("proc", ["ENOENT", "EACCES"])
def test_hidden_proc_uses_the_fork_probe_and_never_trusts_a_cached_positive(
    proc: str, tmp_path: Path, installed_copy: Path
) -> None:
    """No /proc: nothing says whether a seccomp filter could fake the probe, so every process probes."""
    first = run_case(PROBE_BODY, proc_env(proc, tmp_path, installed_copy))
    assert first["file"].startswith(str(installed_copy)), first["file"]
    second = run_case(PROBE_BODY, proc_env(proc, tmp_path, installed_copy))
    for result in (first, second):
        assert_children_clean(result["children"])
        assert result["intact"]
        assert result["selection"]["backend"] == host_backend(), result["selection"]
        if host_backend() == "madvise":
            assert result["selection"]["verification"] == "fork probe", result["selection"]
            assert result["selection"]["cache"] is None, result["selection"]
            assert "not cached: seccomp=unknown" in result["selection"]["verification_detail"]
    assert not list(tmp_path.rglob("verdict-*.json")), "a positive verdict was cached without /proc"
    report(
        f"proc={proc} (installed layout)",
        f"{first['selection']['backend']} via {first['selection']['verification']} in each process; "
        "children read 0 stale bytes",
    )


def test_unreadable_smaps_uses_the_fork_probe_and_caches_it(tmp_path: Path, installed_copy: Path) -> None:
    """smaps hidden, the seccomp status readable: the probe decides, and the next process reuses it."""
    env = proc_env("ENOENT", tmp_path, installed_copy, proc_only="smaps")
    first = run_case(PROBE_BODY, env)
    second = run_case(PROBE_BODY, env)
    for result in (first, second):
        assert_children_clean(result["children"])
        assert result["intact"]
        assert result["selection"]["backend"] == host_backend(), result["selection"]
    if host_backend() == "madvise":
        assert first["selection"]["verification"] == "fork probe", first["selection"]
        assert second["selection"]["verification"].startswith("fork probe (cached"), second["selection"]
        cache = Path(second["selection"]["cache"])
        assert cache.is_relative_to(tmp_path) and json.loads(cache.read_text())["ok"] is True
    report(
        "smaps hidden (installed layout)",
        f"{first['selection']['backend']} via {first['selection']['verification']}, then via "
        f"{second['selection']['verification']}; children read 0 stale bytes",
    )


def test_hidden_proc_and_ignored_advice_gives_a_negative_probe(tmp_path: Path, installed_copy: Path) -> None:
    """No /proc and madvise accepted but ignored: only the fork probe can tell; it must say no."""
    env = proc_env("ENOENT", tmp_path, installed_copy, madvise="IGNORE_WIPE")
    first = run_case(PROBE_BODY, env)
    second = run_case(PROBE_BODY, env)
    for result in (first, second):
        assert result["selection"]["backend"] == "getpid", result["selection"]
        assert_children_clean(result["children"])
        assert result["intact"]
    assert "still read the parent's bytes" in first["selection"]["reason"], first["selection"]
    report(
        "proc=ENOENT + madvise=IGNORE_WIPE",
        f"getpid ({first['selection']['reason']}); second process: {second['selection']['reason']}",
    )


# -- corrupt or unwritable verdict cache (with smaps hidden) --------------------


def _verdict_file(cache: Path, site: Path) -> Path:
    """Populate the cache once and return the verdict file the probe wrote."""
    run_case("out['s'] = selection()", smaps_hidden(cache, site))
    files = sorted((cache / "inherit").glob("verdict-*.json"))
    assert len(files) == 1, files
    return files[0]


CORRUPTIONS: dict[str, bytes] = {
    "garbage": b"\x00\xff\xfe not json at all \x80",
    "truncated": b'{"key": "',
    "empty": b"",
    "json list": b"[true, 1, null]",
    "wrong types": None,  # type: ignore[dict-item]  # filled in with the right key below
    "other key": b'{"key": "0000", "ok": false, "detail": "from another environment"}',
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_verdict_is_ignored_and_rewritten(kind: str, tmp_path: Path, installed_copy: Path) -> None:
    """A damaged verdict file: the probe runs again, gives the host's verdict, and rewrites the file."""
    cache = tmp_path / "cache"
    path = _verdict_file(cache, installed_copy)
    good = json.loads(path.read_text())
    data = CORRUPTIONS[kind]
    if data is None:
        data = json.dumps({"key": good["key"], "ok": "yes", "detail": 7}).encode()
    path.write_bytes(data)
    result = run_case(PROBE_BODY, smaps_hidden(cache, installed_copy))
    sel = result["selection"]
    assert sel["backend"] == host_backend(), sel
    assert sel["verification"] == "fork probe", f"the damaged verdict was used: {sel}"
    assert_children_clean(result["children"])
    rewritten = json.loads(path.read_text())
    assert {**rewritten, "time": None} == {**good, "time": None}, "the verdict was not rewritten"
    report(f"verdict cache {kind}", f"ignored; probe ran again -> {sel['backend']}; file rewritten")


@pytest.mark.parametrize(
    "kind", ["verdict is a directory", "cache dir is a file", "XDG_CACHE_HOME is a file"]
)
def test_verdict_cache_of_the_wrong_type(kind: str, tmp_path: Path, installed_copy: Path) -> None:
    """Paths of the wrong type: the probe still runs and decides, nothing is written, no crash."""
    cache = tmp_path / "cache"
    if kind == "verdict is a directory":
        path = _verdict_file(cache, installed_copy)
        path.unlink()
        path.mkdir()
    elif kind == "cache dir is a file":
        cache.mkdir()
        (cache / "inherit").write_text("not a directory")
    else:
        cache.write_text("not a directory")
    for _ in range(2):
        result = run_case(PROBE_BODY, smaps_hidden(cache, installed_copy))
        sel = result["selection"]
        assert sel["backend"] == host_backend(), sel
        assert sel["verification"] == "fork probe" and sel["cache"] is None, sel
        assert_children_clean(result["children"])
    report(f"verdict cache: {kind}", f"probe ran each time -> {sel['backend']}; nothing cached, no crash")


READ_ONLY = r"""
import ctypes
def make_read_only(d):
    if os.geteuid() != 0:
        os.chmod(d, 0o555)
        return
    # root ignores permissions: remount the directory read-only in a private mount namespace
    libc = ctypes.CDLL(None, use_errno=True)
    MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
    steps = [libc.unshare(0x20000),
             libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
             libc.mount(d.encode(), d.encode(), None, MS_BIND, None),
             libc.mount(None, d.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)]
    if any(steps):
        print("SKIP cannot make a read-only mount: " + os.strerror(ctypes.get_errno()))
        sys.exit(0)
make_read_only(os.environ["XDG_CACHE_HOME"] + "/inherit")
try:
    open(os.environ["XDG_CACHE_HOME"] + "/inherit/probe-write-test", "w").close()
    out["writable"] = True
except OSError:
    out["writable"] = False
"""


@pytest.mark.parametrize("with_garbage", [False, True], ids=["empty", "garbage verdict"])
def test_read_only_cache_dir(with_garbage: bool, tmp_path: Path, installed_copy: Path) -> None:
    """An unwritable cache: the probe runs, its verdict is used without being cached, no crash."""
    cache = tmp_path / "cache"
    if with_garbage:
        path = _verdict_file(cache, installed_copy)
        path.write_bytes(b"\x00garbage")
    else:
        (cache / "inherit").mkdir(parents=True)
    before = sorted(p.name for p in (cache / "inherit").iterdir())
    proc = run_python(
        case_script(READ_ONLY + PROBE_BODY),
        env={"INHERIT_BACKEND": "", **smaps_hidden(cache, installed_copy)},
    )
    if proc.stdout.startswith("SKIP"):
        pytest.skip(proc.stdout.strip()[5:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["writable"] is False
    sel = result["selection"]
    assert sel["backend"] == host_backend(), sel
    assert sel["verification"] == "fork probe" and sel["cache"] is None, sel
    assert_children_clean(result["children"])
    if not os.geteuid() == 0:
        os.chmod(cache / "inherit", 0o755)
    assert sorted(p.name for p in (cache / "inherit").iterdir()) == before, "something was written"
    report(
        f"verdict cache read-only ({'garbage verdict' if with_garbage else 'empty'})",
        f"probe ran -> {sel['backend']}; nothing written, no crash",
    )


# -- mmap failing: address-space limit -------------------------------------------

RLIMIT_AS_BODY = r"""
import re, resource
def vmsize():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmSize:\s+(\d+) kB", f.read()).group(1)) * 1024
out["selection"] = selection()
before = [filled(32), filled(8192)]
out["backend"] = inherit.backend()
resource.setrlimit(resource.RLIMIT_AS, (vmsize() + 8 * 2**20, resource.RLIM_INFINITY))
try:
    inherit.zero_on_fork(64 * 2**20)
    out["large"] = None
except BaseException as exc:
    out["large"] = describe(exc)
many = []
try:
    for _ in range(200000):
        many.append(filled(2048))
    out["small"] = None
except BaseException as exc:
    out["small"] = describe(exc)
out["small_served"] = len(many)
# still alive and working under the limit: free some, allocate again
del many[-512:]  # 1 MiB of slots: room for the fork machinery
import gc; gc.collect()
again = filled(2048)
out["children_under_limit"] = children([before[0], before[1], many[0], again], routes=["os.fork"])
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
del many
gc.collect()
big = filled(64 * 2**20 // 4)
out["children"] = children([before[0], before[1], again, big])
out["intact"] = intact(before) and intact([again, big])
"""


def test_address_space_limit_gives_memory_error(tmp_path: Path) -> None:
    """mmap refused by RLIMIT_AS: MemoryError for a large region and for the arena that would not fit."""
    result = run_case(RLIMIT_AS_BODY, {"XDG_CACHE_HOME": str(tmp_path)})
    assert result["large"] is not None and result["large"]["type"] == "MemoryError", result["large"]
    assert result["small"] is not None and result["small"]["type"] == "MemoryError", result["small"]
    assert_children_clean(result["children_under_limit"])
    assert_children_clean(result["children"])
    assert result["intact"]
    report(
        "mmap refused by RLIMIT_AS",
        f"64 MiB region: MemoryError ({result['large']['message']}); 2 KiB regions: MemoryError after "
        f"{result['small_served']} ({result['small']['message']}); process survived, children read zeros",
    )


def test_address_space_exhausted_before_first_use(tmp_path: Path) -> None:
    """No room even for selection's probe page: a clear error, and selection works once room is back."""
    body = r"""
import re, resource
def vmsize():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmSize:\s+(\d+) kB", f.read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vmsize(), resource.RLIM_INFINITY))
try:
    inherit.zero_on_fork(32)
    out["first"] = None
except BaseException as exc:
    out["first"] = describe(exc)
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
out["selection"] = selection()
r = filled(32)
out["children"] = children([r])
"""
    result = run_case(body, {"XDG_CACHE_HOME": str(tmp_path)})
    first = result["first"]
    if first is not None:
        assert first["type"] == "MemoryError" or (first["type"] == "OSError" and first["errno"] == 12), first
    assert result["selection"]["backend"] == host_backend(), "a transient failure made a fallback stick"
    assert_children_clean(result["children"])
    report(
        "mmap refused before selection (RLIMIT_AS at current size)",
        (f"{first['type']}: {first['message']}" if first else "no error")
        + f"; after the limit was lifted: {result['selection']['backend']}",
    )


# -- the shim additions used by these tests are real ---------------------------


def test_shim_mlock_fault() -> None:
    """The mlock behaviour appended to the shim refuses as configured (so secret tests are not vacuous)."""
    code = """
import ctypes, mmap
libc = ctypes.CDLL(None, use_errno=True)
m = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
buf = (ctypes.c_char * mmap.PAGESIZE).from_buffer(m)
print(libc.mlock(buf, mmap.PAGESIZE), ctypes.get_errno())
"""
    proc = run_python(code, env=fault_env(mlock="EAGAIN"))
    assert proc.stdout.split() == ["-1", str(__import__("errno").EAGAIN)], proc.stderr
