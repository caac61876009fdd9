"""Run a program under real kernel confinement: seccomp filters, a hidden /proc, rlimits, another user.

Unlike the LD_PRELOAD shim (faultshim.py), nothing here fakes libc: the kernel itself refuses a
call, answers "success" for a call that did nothing, or kills the process. The launcher, built
from ``SOURCE`` on first use, is::

    inherit-confine [--hide-proc] [--rlimit-as BYTES] [--rlimit-memlock BYTES]
                    [--user UID[:GID]] [--rule RULE]... -- PROGRAM [ARGS...]

In order it: with ``--hide-proc``, enters a private mount namespace (``unshare(CLONE_NEWNS)``,
every mount made private) and mounts an empty read-only tmpfs named ``inherit-confine`` over
/proc, so the host namespace never sees it; sets RLIMIT_CORE to 0 (killed processes leave no
core files) and the requested rlimits (soft and hard); with ``--user``, drops supplementary
groups and switches gid and uid (GID defaults to UID); if any ``--rule`` is given, sets
PR_SET_NO_NEW_PRIVS and installs the seccomp filter (with none, the program runs with no filter
at all, seccomp mode 0); then ``execvp``s PROGRAM. The filter covers PROGRAM from its ``execve`` on,
dynamic loader and interpreter start-up included.

Rule syntax (``--rule``, repeatable; evaluated in order, first match wins; anything unmatched
is allowed)::

    RULE   := SYSCALL [ ":" INDEX ( "=" | "!=" ) VALUES ] "=" ACTION
    INDEX  := 0..5                      argument number
    VALUES := VALUE ( "," VALUE )*      at most 64; decimal, or 0x hex, optionally negative
    ACTION := "allow" | "kill" | "errno:" ( 0..4095 | EPERM | EINVAL | ENOSYS | ENOMEM
                                           | EACCES | ENOENT | EAGAIN )

``:I=VALUES`` matches when argument I is one of VALUES, ``:I!=VALUES`` when it is none of
them. Only the low 32 bits of the argument are compared (the int arguments involved do not
reliably sign-extend), so -1 and 4294967295 are the same value. ``errno:0`` makes the call
return 0 without running it. ``kill`` is SECCOMP_RET_KILL_PROCESS: the process dies of SIGSYS.
A system call from another ABI (x32, or i386 via int 0x80) also kills. SYSCALL is one of
``SYSCALLS``; a listed name this architecture does not have (fork, vfork, open on aarch64) is
accepted and matches nothing, since no such call can be made. Bad syntax: exit 2 and a message;
a failed setup step (unshare, mount, setrlimit, setuid, seccomp): exit 3; exec failure: 127;
``--help``: usage on stdout, exit 0. UID and GID are decimal, at most 9 digits.

Examples: ``madvise:2=18=errno:0`` (MADV_WIPEONFORK "succeeds" and does nothing),
``madvise:2!=0,1,2=kill``, ``clone=errno:EPERM``, ``getrandom=errno:ENOSYS``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from support import build_program

SYSCALLS = (
    "madvise",
    "process_madvise",
    "mlock",
    "mlock2",
    "mlockall",
    "munlock",
    "munlockall",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "memfd_create",
    "memfd_secret",
    "prctl",
    "getrandom",
    "getpid",
    "clone",
    "clone3",
    "fork",
    "vfork",
    "unshare",
    "open",
    "openat",
    "openat2",
    "statx",
)

_TABLE = "\n".join(
    f'#ifdef SYS_{name}\n    {{"{name}", SYS_{name}}},\n#else\n    {{"{name}", -1}},\n#endif'
    for name in SYSCALLS
)

SOURCE = (
    r"""
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#if defined(__x86_64__)
#define CONFINE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define CONFINE_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define CONFINE_ARCH AUDIT_ARCH_RISCV64
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CONFINE_ARCH AUDIT_ARCH_PPC64LE
#elif defined(__s390x__)
#define CONFINE_ARCH AUDIT_ARCH_S390X
#else
#error "inherit-confine: no audit arch known for this architecture"
#endif

#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LOW_HALF 0
#else
#define LOW_HALF 4
#endif

#define MAX_VALUES 64

struct syscall_name { const char *name; long nr; };
static const struct syscall_name SYSCALLS[] = {
"""
    + _TABLE
    + r"""
};

struct errno_name { const char *name; int value; };
static const struct errno_name ERRNOS[] = {
    {"EPERM", EPERM}, {"EINVAL", EINVAL}, {"ENOSYS", ENOSYS}, {"ENOMEM", ENOMEM},
    {"EACCES", EACCES}, {"ENOENT", ENOENT}, {"EAGAIN", EAGAIN},
};

static const char USAGE[] =
    "usage: inherit-confine [--hide-proc] [--rlimit-as BYTES] [--rlimit-memlock BYTES]\n"
    "                       [--user UID[:GID]] [--rule SYSCALL[:I=V,..|:I!=V,..]=ACTION]...\n"
    "                       -- PROGRAM [ARGS...]\n"
    "ACTION: allow | kill | errno:N (0..4095) | errno:EPERM|EINVAL|ENOSYS|ENOMEM|EACCES|ENOENT|EAGAIN\n";

__attribute__((noreturn, format(printf, 1, 2))) static void bad(const char *fmt, ...) {
    va_list ap;
    fputs("inherit-confine: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fputs(USAGE, stderr);
    exit(2);
}

__attribute__((noreturn)) static void failed(const char *step) {
    fprintf(stderr, "inherit-confine: %s: %s\n", step, strerror(errno));
    exit(3);
}

static struct sock_filter prog[BPF_MAXINSNS];
static unsigned short n_insns;

static void emit(unsigned short code, unsigned char jt, unsigned char jf, uint32_t k) {
    if (n_insns >= BPF_MAXINSNS) bad("too many rules: the filter exceeds %d instructions", BPF_MAXINSNS);
    prog[n_insns].code = code;
    prog[n_insns].jt = jt;
    prog[n_insns].jf = jf;
    prog[n_insns].k = k;
    n_insns++;
}

/* One 32-bit value from s[0..len): optional '-', then decimal or 0x hex digits. */
static int parse_value(const char *s, size_t len, uint32_t *out) {
    int negative = 0;
    unsigned long long v = 0;
    size_t i = 0, digits = 0;
    unsigned base = 10;
    if (i < len && s[i] == '-') { negative = 1; i++; }
    if (i + 1 < len && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X')) { base = 16; i += 2; }
    for (; i < len; i++, digits++) {
        unsigned d;
        char c = s[i];
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return 0;
        v = v * base + d;
        if (v > 0xffffffffULL) return 0;
    }
    if (digits == 0) return 0;
    if (negative) {
        if (v > 0x80000000ULL) return 0;
        *out = (uint32_t)(0x100000000ULL - v);
    } else {
        *out = (uint32_t)v;
    }
    return 1;
}

static uint32_t parse_action(const char *rule, const char *s) {
    if (!strcmp(s, "allow")) return SECCOMP_RET_ALLOW;
    if (!strcmp(s, "kill")) return SECCOMP_RET_KILL_PROCESS;
    if (!strncmp(s, "errno:", 6)) {
        const char *e = s + 6;
        uint32_t v;
        for (size_t i = 0; i < sizeof ERRNOS / sizeof ERRNOS[0]; i++)
            if (!strcmp(e, ERRNOS[i].name)) return SECCOMP_RET_ERRNO | (uint32_t)ERRNOS[i].value;
        if (*e != '-' && parse_value(e, strlen(e), &v) && v <= 4095) return SECCOMP_RET_ERRNO | v;
        bad("rule '%s': errno must be 0..4095 or one of EPERM EINVAL ENOSYS ENOMEM EACCES ENOENT EAGAIN, "
            "not '%s'", rule, e);
    }
    bad("rule '%s': action must be allow, kill or errno:N, not '%s'", rule, s);
}

/* Appends one self-contained block: load nr, compare, [load argument, compare values], return. */
static void add_rule(const char *rule) {
    size_t name_len = strspn(rule, "abcdefghijklmnopqrstuvwxyz0123456789_");
    long nr = -2;
    int arg = -1, negate = 0;
    uint32_t values[MAX_VALUES];
    size_t n_values = 0;
    const char *p = rule + name_len;

    if (name_len == 0) bad("rule '%s': must start with a system call name", rule);
    for (size_t i = 0; i < sizeof SYSCALLS / sizeof SYSCALLS[0]; i++)
        if (strlen(SYSCALLS[i].name) == name_len && !strncmp(rule, SYSCALLS[i].name, name_len))
            nr = SYSCALLS[i].nr;
    if (nr == -2) bad("rule '%s': unknown system call '%.*s'", rule, (int)name_len, rule);

    if (*p == ':') {
        p++;
        if (*p < '0' || *p > '5') bad("rule '%s': argument index must be a digit 0..5", rule);
        arg = *p++ - '0';
        if (*p == '!' && p[1] == '=') { negate = 1; p += 2; }
        else if (*p == '=') p++;
        else bad("rule '%s': expected '=' or '!=' after the argument index", rule);
        for (;;) {
            size_t len = strcspn(p, ",=");
            if (n_values == MAX_VALUES) bad("rule '%s': more than %d values", rule, MAX_VALUES);
            if (!parse_value(p, len, &values[n_values]))
                bad("rule '%s': '%.*s' is not a 32-bit integer", rule, (int)len, p);
            n_values++;
            p += len;
            if (*p != ',') break;
            p++;
        }
    }
    if (*p != '=') bad("rule '%s': expected '=ACTION'", rule);
    uint32_t action = parse_action(rule, p + 1);
    if (nr < 0) return; /* not a system call on this architecture: nothing can match */

    /* Block lengths: no argument 3; "=" 3 + n + 2 (JA over the return); "!=" 3 + n + 1. */
    unsigned block = arg < 0 ? 3 : (unsigned)(3 + n_values + (negate ? 1 : 2));
    emit(BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, nr));
    emit(BPF_JMP | BPF_JEQ | BPF_K, 0, (unsigned char)(block - 2), (uint32_t)nr);
    if (arg >= 0) {
        uint32_t offset = (uint32_t)(offsetof(struct seccomp_data, args) + 8 * (unsigned)arg + LOW_HALF);
        emit(BPF_LD | BPF_W | BPF_ABS, 0, 0, offset);
        for (size_t j = 0; j < n_values; j++) {
            /* "=": a match jumps to the return; "!=": a match jumps past it. */
            emit(BPF_JMP | BPF_JEQ | BPF_K, (unsigned char)(n_values - j), 0, values[j]);
        }
        if (!negate) emit(BPF_JMP | BPF_JA, 0, 0, 1);
    }
    emit(BPF_RET | BPF_K, 0, 0, action);
}

static unsigned long long parse_bytes(const char *opt, const char *s) {
    char *end;
    if (!s) bad("%s needs a value", opt);
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || errno) bad("%s: '%s' is not a byte count", opt, s);
    return v;
}

static unsigned parse_id(const char *value, const char *s, size_t len) {
    unsigned long v = 0;
    if (len == 0 || len > 9) bad("--user: '%s' is not UID[:GID]", value);
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') bad("--user: '%s' is not UID[:GID]", value);
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    return (unsigned)v;
}

static void limit(int resource, unsigned long long value, const char *step) {
    struct rlimit rl = {(rlim_t)value, (rlim_t)value};
    if (setrlimit(resource, &rl) != 0) failed(step);
}

static int n_rules = 0;

int main(int argc, char **argv) {
    int hide_proc = 0, has_user = 0, dashdash = 0, i;
    int has_as = 0, has_memlock = 0;
    unsigned long long rlimit_as = 0, rlimit_memlock = 0;
    unsigned uid = 0, gid = 0;

    emit(BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, arch));
    emit(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, CONFINE_ARCH);
    emit(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_KILL_PROCESS);
#ifdef __x86_64__
    /* x32 system calls (0x40000000 | nr) share the arch; -1 and friends stay ENOSYS. */
    emit(BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, nr));
    emit(BPF_JMP | BPF_JGE | BPF_K, 0, 2, 0x40000000U);
    emit(BPF_JMP | BPF_JGE | BPF_K, 1, 0, 0x80000000U);
    emit(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_KILL_PROCESS);
#endif

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) { dashdash = 1; i++; break; }
        if (!strcmp(a, "--help")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(a, "--hide-proc")) { hide_proc = 1; continue; }
        if (!strcmp(a, "--rule")) {
            if (i + 1 >= argc) bad("--rule needs a value");
            add_rule(argv[++i]);
            n_rules++;
            continue;
        }
        if (!strcmp(a, "--rlimit-as")) {
            if (has_as++) bad("--rlimit-as given twice");
            rlimit_as = parse_bytes(a, i + 1 < argc ? argv[++i] : NULL);
            continue;
        }
        if (!strcmp(a, "--rlimit-memlock")) {
            if (has_memlock++) bad("--rlimit-memlock given twice");
            rlimit_memlock = parse_bytes(a, i + 1 < argc ? argv[++i] : NULL);
            continue;
        }
        if (!strcmp(a, "--user")) {
            const char *s, *colon;
            if (has_user++) bad("--user given twice");
            if (i + 1 >= argc) bad("--user needs a value");
            s = argv[++i];
            colon = strchr(s, ':');
            uid = parse_id(s, s, colon ? (size_t)(colon - s) : strlen(s));
            gid = colon ? parse_id(s, colon + 1, strlen(colon + 1)) : uid;
            continue;
        }
        bad("unknown option '%s' (the program goes after '--')", a);
    }
    if (!dashdash) bad("missing '--' before the program");
    if (i >= argc) bad("no program after '--'");
    emit(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW);

    if (hide_proc) {
        if (unshare(CLONE_NEWNS) != 0) failed("unshare(CLONE_NEWNS)");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) failed("making mounts private");
        if (mount("inherit-confine", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                  "size=4k,mode=0555") != 0)
            failed("mounting a tmpfs over /proc");
    }
    limit(RLIMIT_CORE, 0, "setrlimit(RLIMIT_CORE)");
    if (has_as) limit(RLIMIT_AS, rlimit_as, "setrlimit(RLIMIT_AS)");
    if (has_memlock) limit(RLIMIT_MEMLOCK, rlimit_memlock, "setrlimit(RLIMIT_MEMLOCK)");
    if (has_user) {
        if (setgroups(0, NULL) != 0) failed("setgroups");
        if (setgid(gid) != 0) failed("setgid");
        if (setuid(uid) != 0) failed("setuid");
    }
    if (n_rules) { /* no rule: no filter at all (seccomp mode 0), e.g. only /proc hidden */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) failed("prctl(PR_SET_NO_NEW_PRIVS)");
        struct sock_fprog fprog = {n_insns, prog};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) failed("prctl(PR_SET_SECCOMP)");
    }
    execvp(argv[i], &argv[i]);
    fprintf(stderr, "inherit-confine: cannot run %s: %s\n", argv[i], strerror(errno));
    return 127;
}
"""
)

#: The madvise advice values of Linux up to 6.12, for "everything else" rules (left out: the
#: privileged MADV_HWPOISON/MADV_SOFT_OFFLINE 100/101 and the 6.13 guard-page advice 102/103).
LINUX_ADVICE: tuple[int, ...] = (0, 1, 2, 3, 4, *range(8, 26))

#: MADV_WIPEONFORK returns 0 and does nothing (an emulator that ignores the advice).
FAKE_WIPEONFORK = "madvise:2=18=errno:0"
#: MADV_WIPEONFORK is refused with EPERM (a sandbox policy); other advice works.
REFUSE_WIPEONFORK = "madvise:2=18=errno:EPERM"
#: MADV_DONTDUMP returns 0 and does nothing.
FAKE_DONTDUMP = "madvise:2=16=errno:0"
#: madvise with an advice value Linux does not know kills the process (SIGSYS).
KILL_UNKNOWN_ADVICE = "madvise:2!=" + ",".join(map(str, LINUX_ADVICE)) + "=kill"

# Launcher exit codes.
USAGE_ERROR = 2
SETUP_ERROR = 3


def launcher() -> Path:
    """The compiled launcher; skips off Linux, without a compiler, or without seccomp."""
    if not sys.platform.startswith("linux"):
        pytest.skip(f"seccomp confinement is Linux only (this is {sys.platform})")
    try:
        status = Path("/proc/self/status").read_text()
    except OSError as e:
        pytest.skip(f"cannot read /proc/self/status to check for seccomp: {e}")
    if "\nSeccomp:" not in status:
        pytest.skip("this kernel has no seccomp (no 'Seccomp:' in /proc/self/status)")
    path = build_program(SOURCE, "inherit-confine")
    _probe(str(path), False)
    return path


@functools.cache
def _probe(path: str, hide_proc: bool) -> None:
    """Skip if the kernel or the container refuses a setup step (exit 3); the verdict is cached."""
    argv = [path, *(["--hide-proc"] if hide_proc else []), "--rule", "getpid=allow", "--", path, "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if result.returncode == SETUP_ERROR:
        pytest.skip(f"confinement refused here: {result.stderr.strip()}")
    if result.returncode != 0:
        raise RuntimeError(f"inherit-confine probe failed ({result.returncode}): {result.stderr}")


def confined_command(
    program_argv: Sequence[str],
    *,
    rules: Sequence[str] = (),
    hide_proc: bool = False,
    rlimit_as: int | None = None,
    rlimit_memlock: int | None = None,
    user: tuple[int, int] | None = None,
) -> list[str]:
    """The argv that runs ``program_argv`` under the launcher; skips where it cannot work."""
    if isinstance(rules, str):
        raise TypeError("rules is a sequence of rule strings, not one string")
    if not program_argv:
        raise ValueError("program_argv is empty")
    path = launcher()
    if (hide_proc or user is not None) and os.geteuid() != 0:
        pytest.skip("--hide-proc and --user need root")
    if hide_proc:
        _probe(str(path), True)
    argv = [str(path)]
    if hide_proc:
        argv.append("--hide-proc")
    if rlimit_as is not None:
        argv += ["--rlimit-as", str(rlimit_as)]
    if rlimit_memlock is not None:
        argv += ["--rlimit-memlock", str(rlimit_memlock)]
    if user is not None:
        argv += ["--user", f"{user[0]}:{user[1]}"]
    for rule in rules:
        argv += ["--rule", rule]
    return [*argv, "--", *program_argv]


@functools.cache
def python_for_user(uid: int, gid: int) -> str:
    """An interpreter that ``uid`` can start: this one, else the system python3 (stdlib only).

    A virtualenv under a private home directory is out of reach of other users.
    """
    candidates = [sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]
    for candidate in dict.fromkeys(c for c in candidates if c):
        argv = confined_command([candidate, "-c", "import ctypes, mmap"], user=(uid, gid))
        result = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL, cwd="/")
        if result.returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter that uid {uid} may run")


def merged_env(env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment plus ``env``; a value of "" removes the variable (as run_python)."""
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value == "":
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return full_env


def run_confined(
    code: str,
    *,
    rules: Sequence[str] = (),
    hide_proc: bool = False,
    rlimit_as: int | None = None,
    rlimit_memlock: int | None = None,
    user: tuple[int, int] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    args: Sequence[str] = (),
    python: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` confined, outside the source tree, stdin from /dev/null.

    ``python`` defaults to this interpreter, or with ``user`` to ``python_for_user``.
    """
    if python is None:
        python = sys.executable if user is None else python_for_user(*user)
    argv = confined_command(
        [python, "-c", textwrap.dedent(code), *args],
        rules=rules,
        hide_proc=hide_proc,
        rlimit_as=rlimit_as,
        rlimit_memlock=rlimit_memlock,
        user=user,
    )
    return subprocess.run(
        argv,
        env=merged_env(env),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
