"""The confinement launcher does what it says, shown by real effects (so its users cannot pass vacuously)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from confine import (
    FAKE_DONTDUMP,
    FAKE_WIPEONFORK,
    KILL_UNKNOWN_ADVICE,
    LINUX_ADVICE,
    REFUSE_WIPEONFORK,
    USAGE_ERROR,
    confined_command,
    launcher,
    python_for_user,
    run_confined,
)

pytestmark = pytest.mark.linux

NOBODY = (65534, 65534)

# vmflags(m): the VmFlags of the mapping that holds mmap m, from /proc/self/smaps.
PRELUDE = """
import ctypes, errno, json, mmap, os, sys
def private_page():
    m = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m[:] = b"\\x5a" * mmap.PAGESIZE
    return m
def address(m):
    return ctypes.addressof(ctypes.c_char.from_buffer(m))
def vmflags(m):
    addr, inside = address(m), False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and ":" not in head:
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= addr < end
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    raise AssertionError("mapping not in smaps")
def child_reads(m):
    pid = os.fork()
    if pid == 0:
        data = m[:]
        os._exit(10 if data == b"\\x5a" * len(data) else 11 if not any(data) else 12)
    _, status = os.waitpid(pid, 0)
    return {10: "parent", 11: "zeros"}.get(os.waitstatus_to_exitcode(status), "other")
"""


def run_json(code: str, **kwargs: Any) -> dict[str, object]:
    out = run_confined(PRELUDE + code, **kwargs)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


WIPE = """
m = private_page()
result = m.madvise(18)
print(json.dumps({"result": result, "wf": "wf" in vmflags(m), "child": child_reads(m)}))
"""


def test_fake_wipeonfork_succeeds_and_does_nothing() -> None:
    assert run_json(WIPE, rules=[FAKE_WIPEONFORK]) == {"result": None, "wf": False, "child": "parent"}


def test_without_rules_wipeonfork_really_wipes() -> None:
    assert run_json(WIPE) == {"result": None, "wf": True, "child": "zeros"}


DONTDUMP = """
m = private_page()
m.madvise(16)
print(json.dumps({"dd": "dd" in vmflags(m)}))
"""


@pytest.mark.parametrize("rules,dd", [([FAKE_DONTDUMP], False), ([], True)])
def test_fake_dontdump(rules: list[str], dd: bool) -> None:
    assert run_json(DONTDUMP, rules=rules) == {"dd": dd}


REFUSALS = """
out = {}
m = private_page()
for advice in (18, 4):
    try:
        m.madvise(advice)
        out[advice] = "ok"
    except OSError as e:
        out[advice] = f"{type(e).__name__}:{errno.errorcode[e.errno]}"
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "rule,wipe,dontneed",
    [
        (REFUSE_WIPEONFORK, "PermissionError:EPERM", "ok"),
        ("madvise:2=0x12=errno:EPERM", "PermissionError:EPERM", "ok"),  # hex value
        ("madvise:2=16,18=errno:22", "OSError:EINVAL", "ok"),  # value list, numeric errno
        ("madvise:2=-1,4=errno:ENOMEM", "ok", "OSError:ENOMEM"),
        ("madvise=errno:ENOSYS", "OSError:ENOSYS", "OSError:ENOSYS"),  # every call
        ("madvise:2!=4=errno:EACCES", "PermissionError:EACCES", "ok"),
        ("madvise=allow", "ok", "ok"),
    ],
)
def test_errno_rules(rule: str, wipe: str, dontneed: str) -> None:
    assert run_json(REFUSALS, rules=[rule]) == {"18": wipe, "4": dontneed}


def test_first_matching_rule_wins() -> None:
    rules = ["madvise:2=18=allow", "madvise=errno:EPERM"]
    assert run_json(REFUSALS, rules=rules) == {"18": "ok", "4": "PermissionError:EPERM"}


UNKNOWN_ADVICE = """
m = private_page()
m.madvise(18)
m.madvise(4)
print("known advice ok", "wf" in vmflags(m), flush=True)
try:
    m.madvise(-1)
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def test_kill_on_unknown_advice() -> None:
    out = run_confined(PRELUDE + UNKNOWN_ADVICE, rules=[KILL_UNKNOWN_ADVICE])
    assert out.returncode == -signal.SIGSYS, (out.returncode, out.stderr)
    assert out.stdout == "known advice ok True\n"


def test_unknown_advice_without_policy_is_einval() -> None:
    out = run_confined(PRELUDE + UNKNOWN_ADVICE)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "known advice ok True\nEINVAL\n"


def test_kill_policy_allows_every_linux_advice() -> None:
    # Each value is allowed by the filter; what the kernel says about it is not the point here.
    code = f"""
    m = private_page()
    for advice in {LINUX_ADVICE!r}:
        try:
            m.madvise(advice)
        except OSError:
            pass
    print("alive")
    """
    out = run_confined(PRELUDE + code.replace("\n    ", "\n"), rules=[KILL_UNKNOWN_ADVICE])
    assert (out.returncode, out.stdout) == (0, "alive\n"), out.stderr


SECCOMP_MODE = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
status = None
try:
    with open("/proc/self/status") as f:
        status = [line.split()[1] for line in f if line.startswith("Seccomp:")][0]
except OSError as e:
    status = type(e).__name__
print(json.dumps({
    "status": status,
    "prctl": libc.prctl(21, 0, 0, 0, 0),  # PR_GET_SECCOMP
    "smaps": os.path.exists("/proc/self/smaps"),
    "proc": sorted(os.listdir("/proc"))[:3],
}))
"""


def test_confined_process_shows_seccomp_filter_mode() -> None:
    result = run_json(SECCOMP_MODE, rules=["getpid=allow"])
    assert (result["status"], result["prctl"], result["smaps"]) == ("2", 2, True)


def test_without_rules_no_filter_is_installed() -> None:
    result = run_json(SECCOMP_MODE)
    assert (result["status"], result["prctl"], result["smaps"]) == ("0", 0, True)


def mounts(pid: str = "self") -> set[tuple[str, str, str]]:
    """(mount point, fs type, source) of every mount in ``pid``'s mount namespace."""
    found = set()
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        found.add((fields[4], fields[sep + 1], fields[sep + 2]))
    return found


def test_hide_proc() -> None:
    before = mounts()
    result = run_json(SECCOMP_MODE, hide_proc=True, rules=["getpid=allow"])
    # Nothing under /proc, Seccomp: unreadable, yet the filter is installed.
    assert result == {"status": "FileNotFoundError", "prctl": 2, "smaps": False, "proc": []}
    assert Path("/proc/self/status").read_text().count("Seccomp:") == 1
    assert Path("/proc/self/smaps").exists()
    assert mounts() == before


def test_hidden_proc_lives_only_in_the_private_namespace() -> None:
    code = "import os, sys; print(os.listdir('/proc'), flush=True); sys.stdin.readline()"
    argv = confined_command([sys.executable, "-c", code], hide_proc=True)
    before = mounts()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir()
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "confined process did not start"
        assert proc.stdout.readline() == "[]\n"
        inside = mounts(str(proc.pid))
        assert ("/proc", "tmpfs", "inherit-confine") in inside
        assert ("/proc", "tmpfs", "inherit-confine") not in mounts()
        assert mounts() == before
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert mounts() == before


MLOCK = """
libc = ctypes.CDLL(None, use_errno=True)
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
m = mmap.mmap(-1, int(sys.argv[1]), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
rc = libc.mlock(address(m), len(m))
print(json.dumps({"uid": os.getuid(), "mlock": "ok" if rc == 0 else errno.errorcode[ctypes.get_errno()]}))
"""


@pytest.mark.parametrize(
    "memlock,size,expected",
    [(0, 4096, "EPERM"), (65536, 1 << 20, "ENOMEM"), (1 << 20, 4096, "ok")],
)
def test_rlimit_memlock_as_another_user(memlock: int, size: int, expected: str) -> None:
    result = run_json(MLOCK, user=NOBODY, rlimit_memlock=memlock, args=[str(size)])
    assert result == {"uid": NOBODY[0], "mlock": expected}


def test_python_for_user_is_runnable_by_that_user() -> None:
    python = python_for_user(*NOBODY)
    out = run_confined("import os; print(os.getuid(), os.getgid(), os.getgroups())", user=NOBODY)
    assert out.stdout == f"{NOBODY[0]} {NOBODY[1]} []\n", out.stderr
    assert os.access(python, os.X_OK)


ADDRESS_SPACE = """
out = {}
for size in (16 << 20, 2 << 30):
    try:
        mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS).close()
        out[size] = "ok"
    except OSError as e:
        out[size] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


@pytest.mark.parametrize("rlimit_as,large", [(1 << 30, "ENOMEM"), (None, "ok")])
def test_rlimit_as(rlimit_as: int | None, large: str) -> None:
    assert run_json(ADDRESS_SPACE, rlimit_as=rlimit_as) == {str(16 << 20): "ok", str(2 << 30): large}


BAD_COMMAND_LINES = [
    (["--rule", ""], "rule '': must start with a system call name"),
    (["--rule", "nosuch=kill"], "unknown system call 'nosuch'"),
    (["--rule", "minherit=kill"], "unknown system call 'minherit'"),
    (["--rule", "madvise"], "rule 'madvise': expected '=ACTION'"),
    (["--rule", "madvise="], "action must be allow, kill or errno:N, not ''"),
    (["--rule", "madvise=frob"], "not 'frob'"),
    (["--rule", "madvise=errno:"], "errno must be 0..4095"),
    (["--rule", "madvise=errno:EFOO"], "not 'EFOO'"),
    (["--rule", "madvise=errno:4096"], "not '4096'"),
    (["--rule", "madvise=errno:-1"], "not '-1'"),
    (["--rule", "madvise:6=1=kill"], "argument index must be a digit 0..5"),
    (["--rule", "madvise:=1=kill"], "argument index must be a digit 0..5"),
    (["--rule", "madvise:2=kill"], "'kill' is not a 32-bit integer"),
    (["--rule", "madvise:2<1=kill"], "expected '=' or '!=' after the argument index"),
    (["--rule", "madvise:2!==kill"], "'' is not a 32-bit integer"),
    (["--rule", "madvise:2=1,,2=kill"], "'' is not a 32-bit integer"),
    (["--rule", "madvise:2=0x=kill"], "'0x' is not a 32-bit integer"),
    (["--rule", "madvise:2=4294967296=kill"], "'4294967296' is not a 32-bit integer"),
    (["--rule", "madvise:2=-2147483649=kill"], "'-2147483649' is not a 32-bit integer"),
    (["--rule", "madvise:2=" + ",".join(["1"] * 65) + "=kill"], "more than 64 values"),
    (["--rule"], "rule '--': must start with a system call name"),  # takes the "--" as its value
    (["--rlimit-as", "lots"], "--rlimit-as: 'lots' is not a byte count"),
    (["--rlimit-as", "-1"], "--rlimit-as: '-1' is not a byte count"),
    (["--rlimit-as", "1", "--rlimit-as", "2"], "--rlimit-as given twice"),
    (["--user", "nobody"], "--user: 'nobody' is not UID[:GID]"),
    (["--user", "1:"], "--user: '1:' is not UID[:GID]"),
    (["--frob"], "unknown option '--frob'"),
]


@pytest.mark.parametrize(
    "options,message", BAD_COMMAND_LINES, ids=[" ".join(o) for o, _ in BAD_COMMAND_LINES]
)
def test_bad_command_line_is_a_clear_error(options: list[str], message: str) -> None:
    argv = [str(launcher()), *options, "--", sys.executable, "-c", "print('ran')"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (out.returncode, out.stdout) == (USAGE_ERROR, "")
    first, *rest = out.stderr.splitlines()
    assert first.startswith("inherit-confine: ") and message in first, first
    assert rest[0].startswith("usage: inherit-confine")


def test_too_many_rules_is_a_clear_error() -> None:
    rule = "madvise:2=" + ",".join(["1"] * 64) + "=kill"
    argv = [str(launcher())]
    for _ in range(70):
        argv += ["--rule", rule]
    out = subprocess.run([*argv, "--", "true"], capture_output=True, text=True, timeout=30)
    assert out.returncode == USAGE_ERROR
    assert out.stderr.startswith("inherit-confine: too many rules"), out.stderr


@pytest.mark.parametrize("argv", [[sys.executable, "-c", "print('ran')"], ["--"]])
def test_program_must_follow_double_dash(argv: list[str]) -> None:
    out = subprocess.run([str(launcher()), *argv], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (USAGE_ERROR, ""), out.stderr
    assert out.stderr.startswith("inherit-confine: ")


def test_good_command_line_runs_the_program() -> None:
    """The control for the error cases: the same shapes, well formed, run the program."""
    argv = confined_command(
        [sys.executable, "-c", "print('ran')"],
        rules=["madvise:2=-1,0x7fffffff=kill", "getpid=allow", "madvise:2!=0=allow", "statx=errno:0"],
        rlimit_as=1 << 40,
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (out.returncode, out.stdout) == (0, "ran\n"), out.stderr


def test_rules_must_be_a_sequence_of_strings() -> None:
    with pytest.raises(TypeError):
        confined_command([sys.executable], rules=FAKE_WIPEONFORK)
    with pytest.raises(ValueError):
        confined_command([])
