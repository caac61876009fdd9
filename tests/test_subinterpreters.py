"""The library in an isolated subinterpreter (3.12+; public as ``concurrent.interpreters`` in 3.14).

cffi cannot load in an isolated subinterpreter, so nothing on the Linux path of
selection, detection, regions and views may need it: madvise is verified through
/proc/self/smaps, and a secret region works without mlock (``locked`` is False,
truthfully). Each case runs in a fresh interpreter process that creates the
subinterpreter; results come back over a pipe.
"""

from __future__ import annotations

import json
import sys

import pytest

from support import run_python

pytestmark = pytest.mark.skipif(sys.version_info < (3, 12), reason="isolated subinterpreters need 3.12+")

HOST = r"""
import json, os, sys
try:
    from concurrent import interpreters  # 3.14+
    interp = interpreters.create()
    run = interp.exec
except ImportError:
    try:
        import _interpreters  # 3.13
        interp = _interpreters.create("isolated")
        run = lambda code: _interpreters.exec(interp, code)
    except ImportError:
        import _xxsubinterpreters  # 3.12
        interp = _xxsubinterpreters.create(isolated=True)
        run = lambda code: _xxsubinterpreters.run_string(interp, code)
read_end, write_end = os.pipe()
failure = run(CODE.replace("WRITE_END", str(write_end)))
os.close(write_end)
print("RESULT " + os.read(read_end, 1 << 20).decode())
print("FAILURE " + repr(failure))
"""

INSIDE = r"""
import json, os
out = {}
try:
    import inherit
    out["backend"] = inherit.backend()
    gen = inherit.generation()
    out["stable"] = all(inherit.generation() == gen for _ in range(100))
    region = inherit.zero_on_fork(32)
    region[:] = b"x" * 32
    out["region"] = bytes(region) == b"x" * 32
    with region.view() as view:
        out["view"] = view[:2].tobytes().decode()
    region.close()
    big = inherit.zero_on_fork(100000)
    big.close()
    secret = inherit.zero_on_fork(32, secret=True)
    out["secret"] = {"secret": secret.secret, "locked": secret.locked, "dumpable": secret.dumpable}
    secret.close()
    class Local(inherit.ForkLocal):
        def __init__(self):
            self.value = 7
    out["local"] = Local().value
    out["random"] = 0 <= inherit.Random().random() < 1
    @inherit.per_process_cache
    def square(n):
        return n * n
    out["cache"] = square(3)
    report = inherit.diagnostics()
    out["diagnostics"] = {k: report[k] for k in ("backend", "verification", "error")}
except BaseException as exc:
    import traceback
    out["exception"] = traceback.format_exc()
os.write(WRITE_END, json.dumps(out).encode())
"""


@pytest.mark.parametrize("backend", ["", "getpid"], ids=["default-backend", "getpid-backend"])
def test_everything_works_in_an_isolated_subinterpreter(backend: str) -> None:
    proc = run_python(HOST.replace("CODE", repr(INSIDE)), env={"INHERIT_BACKEND": backend})
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    assert "exception" not in out, out["exception"]
    expected = "getpid" if backend else ("madvise" if sys.platform.startswith("linux") else out["backend"])
    assert out["backend"] == expected
    assert out["diagnostics"] == {
        "backend": expected,
        "verification": "smaps" if expected == "madvise" else out["diagnostics"]["verification"],
        "error": None,
    }
    assert out["stable"] and out["region"] and out["view"] == "xx"
    assert out["secret"]["secret"] is True
    assert out["secret"]["locked"] is False  # mlock needs cffi, which cannot load here
    assert out["local"] == 7 and out["random"] is True and out["cache"] == 9
