"""Fallback for every platform: compare ``os.getpid()`` and wipe lazily.

The kernel does nothing here; the library wipes zero-on-fork memory on the
first access through its API in a process with a new PID, and eagerly in
``os.fork()`` children through ``os.register_at_fork``. Blind spots: memory
read through an old memoryview after a fork from C, PID reuse, and a child
that gets its parent's PID (a new PID namespace).
"""

import mmap

from . import Backend, Verification


class GetpidBackend(Backend):
    name = "getpid"
    kernel_wipes = False

    def mark_zero(self, mem: mmap.mmap) -> None:
        """Nothing to tell the kernel; the library tracks and wipes the memory."""

    def mark_keep(self, mem: mmap.mmap) -> None:
        """Nothing to tell the kernel."""

    def verify(self) -> tuple[Verification, mmap.mmap | None]:
        return (
            Verification(
                "none needed",
                "compares os.getpid() on each check and wipes on the first access in a new "
                "process; os.register_at_fork wipes eagerly in os.fork() children",
            ),
            None,
        )
