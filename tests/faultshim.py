"""An LD_PRELOAD library that makes madvise() and /proc misbehave, for fault tests.

Real code paths run under real forks; only the answers of libc change. The
shim reads its instructions from the environment of the process it is loaded in:

``INHERIT_FAULT_MADVISE``
    ``EPERM``, ``EINVAL``, ``ENOSYS``, ``ENOMEM``: MADV_WIPEONFORK/KEEPONFORK (18/19)
    fail with that errno; other advice goes to the kernel.
    ``IGNORE``: every advice returns 0 and nothing reaches the kernel (old qemu-user).
    ``IGNORE_WIPE``: 18/19 return 0 without effect; other advice goes to the kernel.
``INHERIT_FAULT_MADVISE_AFTER``
    Let this many WIPEONFORK calls through before the fault starts (default 0).
``INHERIT_FAULT_PROC``
    ``ENOENT`` or ``EACCES``: opening anything under /proc/self/ fails so.
``INHERIT_FAULT_PROC_ONLY``
    With ``INHERIT_FAULT_PROC``: only this file under /proc/self/ fails (``smaps``, say), so
    the rest of /proc (the seccomp status in ``status``) stays readable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support import build_shared_library

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>

static int errno_named(const char *name) {
    if (!name) return 0;
    if (!strcmp(name, "EPERM")) return EPERM;
    if (!strcmp(name, "EINVAL")) return EINVAL;
    if (!strcmp(name, "ENOSYS")) return ENOSYS;
    if (!strcmp(name, "ENOMEM")) return ENOMEM;
    if (!strcmp(name, "ENOENT")) return ENOENT;
    if (!strcmp(name, "EACCES")) return EACCES;
    return 0;
}

static int wipe_calls = 0;

int madvise(void *addr, size_t len, int advice) {
    static int (*real)(void *, size_t, int);
    if (!real) real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "madvise");
    const char *mode = getenv("INHERIT_FAULT_MADVISE");
    int wipe_or_keep = (advice == 18 || advice == 19);
    if (mode && wipe_or_keep) {
        const char *after = getenv("INHERIT_FAULT_MADVISE_AFTER");
        if (advice == 18 && after && wipe_calls++ < atoi(after)) return real(addr, len, advice);
    }
    if (mode && !strcmp(mode, "IGNORE")) return 0;
    if (mode && wipe_or_keep) {
        if (!strcmp(mode, "IGNORE_WIPE")) return 0;
        int err = errno_named(mode);
        if (err) { errno = err; return -1; }
    }
    return real(addr, len, advice);
}

static int proc_blocked(const char *path) {
    int err = errno_named(getenv("INHERIT_FAULT_PROC"));
    const char *only = getenv("INHERIT_FAULT_PROC_ONLY");
    if (err && path && !strncmp(path, "/proc/self/", 11) && (!only || !strcmp(path + 11, only))) {
        errno = err;
        return 1;
    }
    return 0;
}

#define OPEN_WRAPPER(name)                                                  \
int name(const char *path, int flags, ...) {                                \
    static int (*real)(const char *, int, ...);                             \
    if (!real) real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #name); \
    mode_t mode = 0;                                                        \
    if (flags & (O_CREAT | O_TMPFILE)) {                                    \
        va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); \
    }                                                                       \
    if (proc_blocked(path)) return -1;                                      \
    return real(path, flags, mode);                                         \
}
OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(name)                                                \
int name(int dirfd, const char *path, int flags, ...) {                     \
    static int (*real)(int, const char *, int, ...);                        \
    if (!real) real = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, #name); \
    mode_t mode = 0;                                                        \
    if (flags & (O_CREAT | O_TMPFILE)) {                                    \
        va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); \
    }                                                                       \
    if (proc_blocked(path)) return -1;                                      \
    return real(dirfd, path, flags, mode);                                  \
}
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)
"""


def fault_shim() -> Path:
    """Build (once) and return the shim; skip off Linux or without a compiler."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the LD_PRELOAD fault shim is Linux-only")
    return build_shared_library(SOURCE, "inherit-faultshim")


def fault_env(**faults: str) -> dict[str, str]:
    """Environment for a subprocess: the shim preloaded plus ``INHERIT_FAULT_*`` settings.

    ``fault_env(madvise="EPERM", proc="ENOENT")``
    """
    env = {"LD_PRELOAD": str(fault_shim())}
    for key, value in faults.items():
        env[f"INHERIT_FAULT_{key.upper()}"] = value
    return env


# -- Appended: mlock() faults, for the secret-region tests ------------------------------------------
#
# ``INHERIT_FAULT_MLOCK``
#     ``EPERM``, ``ENOMEM``, ``EAGAIN``: mlock() fails with that errno without reaching the kernel
#     (what an unprivileged process over RLIMIT_MEMLOCK sees; root is never refused otherwise).
#
# ``fault_env(mlock="ENOMEM")``

SOURCE += r"""
int mlock(const void *addr, size_t len) {
    static int (*real)(const void *, size_t);
    if (!real) real = (int (*)(const void *, size_t))dlsym(RTLD_NEXT, "mlock");
    const char *mode = getenv("INHERIT_FAULT_MLOCK");
    int err = (mode && !strcmp(mode, "EAGAIN")) ? EAGAIN : errno_named(mode);
    if (err) { errno = err; return -1; }
    return real(addr, len);
}
"""
