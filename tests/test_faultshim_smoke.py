"""The fault shim itself does what it says (so fault tests cannot pass vacuously)."""

import pytest

from faultshim import fault_env
from support import run_python

pytestmark = pytest.mark.linux


@pytest.mark.parametrize("mode,errno_name", [("EPERM", "EPERM"), ("ENOSYS", "ENOSYS")])
def test_shim_refuses_wipeonfork(mode: str, errno_name: str) -> None:
    code = """
    import errno, mmap
    m = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m.madvise(18)
    except OSError as e:
        print(errno.errorcode[e.errno])
    else:
        print("accepted")
    """
    out = run_python(code, env=fault_env(madvise=mode))
    assert out.stdout.strip() == errno_name, out.stderr


def test_shim_hides_proc() -> None:
    code = """
    try:
        open("/proc/self/smaps", "rb")
    except OSError as e:
        print(type(e).__name__)
    """
    out = run_python(code, env=fault_env(proc="ENOENT"))
    assert out.stdout.strip() == "FileNotFoundError", out.stderr
