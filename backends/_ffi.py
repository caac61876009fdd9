"""The C library through the generated out-of-line cffi module, loaded only when a backend needs it.

cffi cannot load in an isolated subinterpreter; nothing on the Linux path of
selection and detection needs it.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_libc: Any = None


def libc() -> Any:
    """The process's own C library, or None where there is none to call (Windows)."""
    global _libc
    if _libc is None and os.name != "nt":
        from .._native import ffi

        _libc = ffi.dlopen(None)
    return _libc


def pointer_to(buffer: Any) -> Any:
    """A ``char *`` cdata for a writable buffer; release it with ``ffi.release`` after the call."""
    from .._native import ffi

    return ffi.from_buffer(buffer, require_writable=True)
