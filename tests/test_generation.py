"""``generation()``: a new value in every forked child, whatever made it; stable everywhere else.

Every fork-route test runs once per route in ``inherit.testing.available_routes()``. Under
``INHERIT_BACKEND=getpid`` the same tests apply unchanged: that backend compares PIDs on every
call, so it sees children made by routes that skip Python's at-fork hooks as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import pytest

import inherit
from inherit.testing import available_routes, run_in_child

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")

# Forking from a thread-y parent is what these tests are about; 3.12+ warns about it.
ignore_threaded_fork_warning = pytest.mark.filterwarnings(
    "ignore:.*multi-threaded.*fork.*:DeprecationWarning"
)


def _observe() -> tuple[int, int]:
    """Two readings in a row (the child's or grandchild's view), to check they agree."""
    return inherit.generation(), inherit.generation()


def _child_with_grandchild(route: str) -> dict[str, object]:
    """In the child: its own generation, a grandchild's (same route), then its own again."""
    first = inherit.generation()
    again = inherit.generation()
    grandchild = run_in_child(_observe, route=route)
    after = inherit.generation()
    return {"first": first, "again": again, "grandchild": grandchild, "after": after}


# --- basic contract ---------------------------------------------------------------------------


def test_generation_is_an_int() -> None:
    """A plain int (not bool, not a subclass): cheap to store and compare."""
    value = inherit.generation()
    assert type(value) is int


def test_generation_is_constant_without_a_fork() -> None:
    """Nothing but a fork may move it; many calls in a row give one value."""
    values = {inherit.generation() for _ in range(10_000)}
    assert len(values) == 1


@needs_fork
def test_child_and_grandchild_see_new_generations(fork_route: str) -> None:
    """Child and grandchild (forked inside the child by the same route) each get a new value."""
    before = inherit.generation()
    seen = run_in_child(_child_with_grandchild, fork_route, route=fork_route)
    after = inherit.generation()

    assert after == before, "the parent's generation moved because it forked"
    assert type(seen["first"]) is int
    assert seen["first"] != before, f"child ({fork_route}) kept the parent's generation"
    assert seen["first"] == seen["again"] == seen["after"], "child's generation not stable"
    grand_first, grand_again = seen["grandchild"]  # type: ignore[misc]
    assert grand_first == grand_again, "grandchild's generation not stable"
    assert grand_first != seen["first"], f"grandchild ({fork_route}) kept the child's generation"


@needs_fork
def test_sequential_children_never_share_the_parents_value(fork_route: str) -> None:
    """Several children in a row: each differs from the parent, which never moves."""
    before = inherit.generation()
    children = [run_in_child(inherit.generation, route=fork_route) for _ in range(3)]
    assert inherit.generation() == before
    assert all(type(value) is int for value in children)
    assert before not in children


@needs_fork
def test_child_value_is_stable_across_many_calls(fork_route: str) -> None:
    """In the child, after the first detection, the value stays put (no repeated detection)."""

    def child() -> list[int]:
        return sorted({inherit.generation() for _ in range(2_000)})

    parent = inherit.generation()
    values = run_in_child(child, route=fork_route)
    assert len(values) == 1
    assert values[0] != parent


@needs_fork
@ignore_threaded_fork_warning
def test_child_forked_from_a_worker_thread(fork_route: str) -> None:
    """A fork made by a thread other than the main one is detected the same way."""
    parent = inherit.generation()
    out: list[object] = []

    def worker() -> None:
        try:
            out.append(run_in_child(_observe, route=fork_route))
        except BaseException as exc:  # re-raised in the test's thread below
            out.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    first, again = out[0]  # type: ignore[misc]
    assert first == again != parent
    assert inherit.generation() == parent


# --- threads -------------------------------------------------------------------------------------


def _threads_race_to_detect(count: int) -> list[int]:
    """In a fresh child: ``count`` threads released together all call generation() first."""
    barrier = threading.Barrier(count)
    seen: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=20)
            seen.append(inherit.generation())
        except BaseException as exc:  # reported to the parent below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    seen.append(inherit.generation())  # the main thread, last
    return seen


@needs_fork
def test_threads_in_child_agree_on_one_new_value(fork_route: str) -> None:
    """Threads that notice the same fork at once see one value: the fork is settled once.

    Each new process draws a fresh value, so two threads that both settled the fork
    would have seen two different values.
    """
    parent = inherit.generation()
    seen = run_in_child(_threads_race_to_detect, 8, route=fork_route)
    assert len(seen) == 9
    assert set(seen) == {seen[0]}, f"threads disagree after a fork: {sorted(set(seen))}"
    assert seen[0] != parent


class _ForkPause:
    """Parks hammer threads on a lock (not waiting for the GIL) around a raw fork."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.requested = threading.Event()
        self.gate = threading.Lock()
        self.parked = threading.Semaphore(0)
        self.resumed = threading.Semaphore(0)

    def checkpoint(self) -> None:
        """Called by each hammer thread between batches."""
        if self.requested.is_set():
            self.parked.release()
            with self.gate:  # blocks, GIL released, until the fork is done
                pass
            self.resumed.release()

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self.gate:
            self.requested.set()
            try:
                for _ in range(self.threads):
                    assert self.parked.acquire(timeout=20), "a hammer thread did not park"
                time.sleep(0.001)  # let the last parked thread reach its blocking acquire
                yield
            finally:
                self.requested.clear()
        for _ in range(self.threads):  # no straggler may count towards the next pause
            assert self.resumed.acquire(timeout=20), "a hammer thread did not resume"


def _hammer(
    expected: int, stop: threading.Event, changes: list[int], counts: list[int], pause: _ForkPause | None
) -> None:
    """Call generation() until told to stop; record any value other than ``expected``."""
    calls = 0
    while not stop.is_set():
        for _ in range(64):
            value = inherit.generation()
            if value != expected:
                changes.append(value)
        calls += 64
        if pause is not None:
            pause.checkpoint()
    counts.append(calls)


@needs_fork
@ignore_threaded_fork_warning
@pytest.mark.parametrize("route", ["os.fork", "libc.fork"])
def test_no_false_positive_in_parent_while_children_come_and_go(route: str) -> None:
    """Threads hammering generation() in the parent never see it move while it forks children.

    For ``os.fork`` the threads keep running through the fork itself. A raw ``fork()`` from C
    skips CPython's re-initialisation of the GIL in the child, so a thread waiting for the GIL at
    that instant leaves the child's GIL condition variable with a waiter that does not exist
    there, and the child can hang on its first GIL release (a CPython limitation, about 1 child
    in 40 in a trial). For that route the threads park on a lock (not the GIL) just for the fork
    and run while the child lives and exits.
    """
    if route not in available_routes():
        pytest.skip(f"route {route} not available here")
    expected = inherit.generation()
    stop = threading.Event()
    changes: list[int] = []
    counts: list[int] = []
    nthreads = 3
    pause = _ForkPause(nthreads) if route == "libc.fork" else None
    threads = [
        threading.Thread(target=_hammer, args=(expected, stop, changes, counts, pause))
        for _ in range(nthreads)
    ]
    for thread in threads:
        thread.start()
    children: list[int] = []
    try:
        for _ in range(10):
            with pause.paused() if pause is not None else nullcontext():
                child = _start_child(route)
            children.append(_finish_child(child))  # the threads run while the child lives
            assert inherit.generation() == expected
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(counts) == nthreads and all(counts), "a hammer thread never ran"
    assert changes == [], f"generation() moved in the parent: {sorted(set(changes))[:5]}"
    assert expected not in children, "a child reported the parent's generation"


def _start_child(route: str) -> tuple[int, int]:
    """Fork by ``route`` a child that writes its generation to a pipe; return (pid, read end)."""
    import ctypes

    read_fd, write_fd = os.pipe()
    pid = os.fork() if route == "os.fork" else int(ctypes.PyDLL(None).fork())
    if pid == 0:  # child: as little Python as possible, then _exit
        try:
            os.close(read_fd)
            os.write(write_fd, str(inherit.generation()).encode())
        finally:
            os._exit(0)
    assert pid > 0, "fork failed"
    os.close(write_fd)
    return pid, read_fd


def _finish_child(child: tuple[int, int]) -> int:
    """Read the child's generation, reap it, and return the value."""
    pid, read_fd = child
    chunks: list[bytes] = []
    try:
        while True:
            assert _wait_readable(read_fd, 20), "the child did not answer"
            data = os.read(read_fd, 64)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return int(b"".join(chunks))


def _wait_readable(fd: int, timeout: float) -> bool:
    import select

    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


# --- things that are not forks ------------------------------------------------------------------


def _unchanged_after(action: Callable[[], object]) -> None:
    before = inherit.generation()
    action()
    assert inherit.generation() == before


def test_no_false_positive_for_threads() -> None:
    """Threads share the process: they see the main thread's value and do not move it."""
    main = inherit.generation()
    seen: list[int] = []

    def worker() -> None:
        seen.extend(inherit.generation() for _ in range(1_000))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4_000
    assert set(seen) == {main}
    assert inherit.generation() == main


def test_no_false_positive_for_subprocess_run() -> None:
    """subprocess.run forks/spawns and execs; the parent stays in its generation."""
    _unchanged_after(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))


@needs_fork
def test_no_false_positive_for_subprocess_with_preexec_fn() -> None:
    """preexec_fn forces a real fork() and runs Python's at-fork hooks in the parent."""
    calls: list[int] = []
    _unchanged_after(
        lambda: subprocess.run(
            [sys.executable, "-c", "pass"], check=True, preexec_fn=lambda: calls.append(os.getpid())
        )
    )


@pytest.mark.skipif(not hasattr(os, "posix_spawn"), reason="no os.posix_spawn")
def test_no_false_positive_for_posix_spawn() -> None:
    """posix_spawn (CLONE_VFORK on Linux) makes a process without copying ours."""
    true = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"

    def spawn() -> None:
        pid = os.posix_spawn(true, [true], dict(os.environ))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    _unchanged_after(spawn)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1")
def test_no_false_positive_for_signals() -> None:
    """A signal handler runs in the same process: it sees the same value and moves nothing."""
    before = inherit.generation()
    in_handler: list[int] = []

    def handler(signum: int, frame: object) -> None:
        in_handler.append(inherit.generation())

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(1_000):  # the handler runs at the next bytecode boundary or sleep
            if len(in_handler) >= 3:
                break
            time.sleep(0.001)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert len(in_handler) >= 1, "the signal handler never ran"
    assert set(in_handler) == {before}
    assert inherit.generation() == before


@needs_fork
def test_no_false_positive_for_os_system() -> None:
    """os.system runs a shell in another process; ours is unchanged."""

    def system() -> None:
        assert os.system("true") == 0

    _unchanged_after(system)
