"""A fork probe run in a short-lived helper process, with a cached verdict.

Used where the kernel offers no in-process proof (no ``/proc``, BSDs). The
helper, not the caller, forks: the caller's state is never duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ._base import Verification, describe_oserror, page_size

PROBE_VERSION = 1
_NESTED = "_INHERIT_PROBE_HELPER"
_SENTINEL = b"\xa5\x5a\xc3\x3c" * 4
# The helper gets the caller's sys.path, so it imports what the caller imports
# (an editable install or a source checkout too), but no site hooks and no cwd.
_HELPER = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]);"
    "from inherit.backends._probe import run_here; run_here(sys.argv[2])"
)


def run_here(name: str) -> None:
    """Helper entry point: mark a page, fork, report whether the child saw zeros."""
    from inherit._select import make

    backend = make(name)
    mem = backend.allocate(page_size())
    try:
        backend.mark_zero(mem)
    except OSError as exc:
        _report(False, describe_oserror(f"{name} mark_zero", exc))
        return
    mem[: len(_SENTINEL)] = _SENTINEL
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if the page reads as zeros
        os._exit(0 if mem[: len(_SENTINEL)] == bytes(len(_SENTINEL)) else 3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if mem[: len(_SENTINEL)] != _SENTINEL:
        _report(False, "the parent's own bytes changed after fork")
    elif code == 0:
        _report(True, "a forked child read zeros from a marked page")
    elif code == 3:
        _report(False, "the call succeeded but a forked child still read the parent's bytes")
    else:
        _report(False, f"the probe child exited with status {code}")


def _report(ok: bool, detail: str) -> None:
    sys.stdout.write(json.dumps({"ok": ok, "detail": detail}))
    sys.stdout.flush()


def cache_key(name: str) -> str:
    """Everything that could change the verdict: OS release, machine, binary, preloads."""
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
        os.environ.get("LD_PRELOAD", ""),
        os.environ.get("LD_LIBRARY_PATH", ""),
        sorted((k, v) for k, v in os.environ.items() if k.startswith("_INHERIT_TEST_")),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def cache_dir() -> Path | None:
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("inherit", appauthor=False))
    except Exception:  # no usable home directory, for instance
        return None


def _read_cached(path: Path, key: str) -> tuple[bool, str] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    ok, detail = data.get("ok"), data.get("detail")
    if not isinstance(ok, bool) or not isinstance(detail, str):
        return None
    return ok, detail


def _write_cached(path: Path, key: str, ok: bool, detail: str) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".verdict-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "ok": ok, "detail": detail}, f)
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


def fork_probe(name: str, timeout: float = 20.0) -> tuple[bool, Verification]:
    """Return (works, verification). Reads and refreshes the verdict cache."""
    if os.environ.get(_NESTED):
        # Never a probe inside a probe helper: whatever went wrong, no fork bomb.
        return False, Verification("fork probe", "refused inside a probe helper")
    key = cache_key(name)
    directory = cache_dir()
    path = directory / f"verdict-{name}-{key[:32]}.json" if directory else None
    if path is not None:
        cached = _read_cached(path, key)
        if cached is not None:
            ok, detail = cached
            return ok, Verification("fork probe (cached)", detail, str(path))
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _HELPER, json.dumps(_import_path()), name],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, _NESTED: "1"},
        )
        result = json.loads(proc.stdout.decode() or "null")
        ok, detail = bool(result["ok"]), str(result["detail"])
    except subprocess.TimeoutExpired:
        return False, Verification("fork probe", f"the probe helper timed out after {timeout} s")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        stderr = locals().get("proc")
        tail = stderr.stderr.decode(errors="replace").strip()[-300:] if stderr else ""
        return False, Verification("fork probe", f"the probe helper failed: {exc!r} {tail}".strip())
    written = path is not None and _write_cached(path, key, ok, detail)
    return ok, Verification("fork probe", detail, str(path) if written else None)
