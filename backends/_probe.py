"""A fork probe run in a short-lived helper process, with a cached verdict.

Used where the kernel offers no in-process proof (no readable /proc, the BSDs)
and as a tie-breaker where /proc disagrees with a return code. The helper, not
the caller, forks: the caller's state is never duplicated, no bogus advice is
ever sent from the caller's process (a seccomp policy may kill on it), and the
caller sees no fork-with-threads warning.

Verdicts are cached under the user cache directory, keyed by everything that
could change them (kernel, machine, interpreter binary, preloads, seccomp
mode). A positive verdict recorded under a seccomp filter, or where the
confinement cannot be read, is never trusted: such a filter may answer
"success" for a call that does nothing. Only definite negatives are cached, for
a short time; transient failures (the helper crashed, timed out, or could not
mark memory) are not cached at all.
"""

from __future__ import annotations

import json
import os
import sys
import time

from . import PAGE_SIZE, Verification, describe_oserror

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

PROBE_VERSION = 3
NEGATIVE_TTL = 600.0  # seconds a definite negative verdict is reused
_NESTED = "_INHERIT_PROBE_HELPER"
_SENTINEL = b"\xa5\x5a\xc3\x3c" * 4
# The helper gets the caller's sys.path, so it imports what the caller imports, and
# runs site (an editable install's import hook lives in a .pth file), but ignores
# PYTHON* variables, user site-packages and the current directory (-I).
_HELPER = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]);"
    "from inherit.backends._probe import run_here; run_here(sys.argv[2])"
)


def run_here(name: str) -> None:
    """Helper entry point: mark a page, fork, report whether the child saw zeros."""
    from . import make

    backend = make(name)
    mem = backend.allocate(PAGE_SIZE)
    precheck = getattr(backend, "check_in_helper", None)
    if precheck is not None:
        problem = precheck(mem)
        if problem is not None:
            _report(False, problem, definite=True)
            return
    try:
        backend.mark_zero(mem)
    except OSError as exc:
        _report(False, describe_oserror(f"{name} mark_zero", exc), definite=False)
        return
    mem[: len(_SENTINEL)] = _SENTINEL
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if the page reads as zeros
        os._exit(0 if mem[: len(_SENTINEL)] == bytes(len(_SENTINEL)) else 3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if mem[: len(_SENTINEL)] != _SENTINEL:
        _report(False, "the parent's own bytes changed after fork", definite=False)
    elif code == 0:
        _report(True, "a forked child read zeros from a marked page", definite=True)
    elif code == 3:
        _report(False, "the call succeeded but a forked child still read the parent's bytes", definite=True)
    else:
        _report(False, f"the probe's child exited with status {code}", definite=False)


def _report(ok: bool, detail: str, *, definite: bool) -> None:
    sys.stdout.write(json.dumps({"ok": ok, "detail": detail, "definite": definite}))
    sys.stdout.flush()


def confinement() -> str:
    """What confines this process, as far as a verdict depends on it.

    Read from /proc/self/status only. Where /proc is hidden the answer is
    "unknown": prctl(PR_GET_SECCOMP) cannot stand in, since the filter it would
    detect can fake its answer.
    """
    if not sys.platform.startswith("linux"):
        return "none"
    from .madvise import seccomp_mode

    mode = seccomp_mode()
    return f"seccomp={'unknown' if mode is None else mode}"


def trusts_cached_positive(confined: str) -> bool:
    return confined in ("none", "seccomp=0")


def cache_key(name: str, confined: str) -> str:
    """Everything that could change the verdict: OS release, machine, binary, preloads, confinement.

    The whole key is stored in the verdict file and compared on reading; its CRC only names the
    file. No hashlib: importing it aborts isolated subinterpreters on some 3.12 releases.
    """
    exe = os.path.realpath(sys.executable)
    try:
        st = os.stat(exe)
        exe_id: list[object] = [st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns]
    except OSError:
        exe_id = []
    uname = os.uname()
    parts = [
        PROBE_VERSION,
        name,
        uname.sysname,
        uname.release,
        uname.version,
        uname.machine,
        exe,
        exe_id,
        sys.version,
        confined,
        os.environ.get("LD_PRELOAD", ""),
        os.environ.get("LD_LIBRARY_PATH", ""),
        sorted((k, v) for k, v in os.environ.items() if k.startswith("_INHERIT_TEST_")),
    ]
    return json.dumps(parts)


def cache_file_name(name: str, key: str) -> str:
    from binascii import crc32

    return f"verdict-{name}-{crc32(key.encode()):08x}.json"


def cache_dir() -> Path | None:
    try:
        from pathlib import Path

        import platformdirs

        return Path(platformdirs.user_cache_dir("inherit", appauthor=False))
    except Exception:  # no usable home directory, for instance
        return None


def _read_cached(path: Path, key: str) -> tuple[bool, str, float] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    ok, detail, when = data.get("ok"), data.get("detail"), data.get("time")
    if not isinstance(ok, bool) or not isinstance(detail, str) or not isinstance(when, (int, float)):
        return None
    return ok, detail, float(when)


def _write_cached(path: Path, key: str, ok: bool, detail: str) -> bool:
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".verdict-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "ok": ok, "detail": detail, "time": time.time()}, f)
            os.replace(tmp, path)  # atomic: readers see the old file or the new one
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return False
    return True


def _import_path() -> list[str]:
    import inherit

    root = os.path.dirname(os.path.dirname(os.path.abspath(inherit.__file__)))
    return [root] + [p for p in sys.path if p and p != root]


def _run_helper(name: str, timeout: float) -> tuple[bool, str, bool]:
    """(ok, detail, definite) from a fresh helper process; never raises."""
    try:
        import subprocess
    except ImportError as exc:  # pragma: no cover - every CPython has it
        return False, f"cannot run a probe helper: {exc}", False
    proc = None
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _HELPER, json.dumps(_import_path()), name],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, _NESTED: "1"},
        )
        if proc.returncode < 0:
            import signal

            try:
                signame = signal.Signals(-proc.returncode).name
            except ValueError:
                signame = str(-proc.returncode)
            return False, f"the probe helper was killed by {signame}", False
        result = json.loads(proc.stdout.decode() or "null")
        return bool(result["ok"]), str(result["detail"]), bool(result["definite"])
    except subprocess.TimeoutExpired:
        return False, f"the probe helper timed out after {timeout} s", False
    except Exception as exc:  # cannot spawn (an isolated subinterpreter), or garbled output
        tail = proc.stderr.decode(errors="replace").strip()[-300:] if proc is not None else ""
        return False, f"the probe helper failed: {exc!r} {tail}".strip(), False


def fork_probe(name: str, timeout: float = 20.0) -> tuple[bool, Verification]:
    """Return (works, verification). Reads and refreshes the verdict cache."""
    if os.environ.get(_NESTED):
        # Never a probe inside a probe helper: whatever went wrong, no fork bomb.
        return False, Verification("fork probe", "refused inside a probe helper")
    confined = confinement()
    key = cache_key(name, confined)
    directory = cache_dir()
    path = directory / cache_file_name(name, key) if directory else None
    if path is not None:
        cached = _read_cached(path, key)
        if cached is not None:
            ok, detail, when = cached
            fresh = time.time() - when < NEGATIVE_TTL
            if (ok and trusts_cached_positive(confined)) or (not ok and fresh):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(when))
                return ok, Verification(f"fork probe (cached, recorded {stamp})", detail, str(path))
    ok, detail, definite = _run_helper(name, timeout)
    cacheable = (ok and trusts_cached_positive(confined)) or (not ok and definite)
    written = path is not None and cacheable and _write_cached(path, key, ok, detail)
    if ok and not trusts_cached_positive(confined):
        detail += f" (not cached: {confined} may fake success)"
    return ok, Verification("fork probe", detail, str(path) if written else None)
