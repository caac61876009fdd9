"""Regenerate ``inherit/_native.py``, the out-of-line cffi ABI module.

Out-of-line mode means no ``cdef`` is parsed at import time (parsing costs
about 20 ms); the generated file only needs ``_cffi_backend``.

    python tools/gen_native.py          # rewrite inherit/_native.py
    python tools/gen_native.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cffi

# Only what a backend or the secret-page code calls: minherit (BSDs) and mlock.
CDEF = """
int minherit(void *addr, size_t len, int inherit);
int mlock(const void *addr, size_t len);
"""

TARGET = Path(__file__).resolve().parent.parent / "inherit" / "_native.py"


def generate() -> str:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("inherit._native", None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "_native.py"
        ffi.emit_python_code(str(out))
        return out.read_text()


def main() -> int:
    text = generate()
    if "--check" in sys.argv[1:]:
        return 0 if TARGET.read_text() == text else 1
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
