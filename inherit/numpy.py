"""Per-process numpy random generators: ``from inherit.numpy import Generator, worker_seed``.

numpy is imported only when these are used (``import inherit`` never loads it).
A ``numpy.random.Generator`` built in a parent is copied into every forked
worker, which then draws the same numbers (PyTorch's DataLoader reseeds only
numpy's legacy global state, not a Generator). :class:`Generator` builds a new
one in every process, and pickles by rebuilding from its arguments, so it also
works as an attribute of an object sent to spawn or forkserver workers.
"""

import os

from ._runtime import ForkLocal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import numpy

    WorkerKey = int | str | tuple[int | str, ...] | Callable[[], "int | str | tuple[int | str, ...]"] | None

__all__ = ["Generator", "torch_worker_id", "worker_seed"]


def worker_seed(
    base_seed: "int | None" = None, worker_key: "WorkerKey" = None
) -> "numpy.random.SeedSequence":
    """A ``numpy.random.SeedSequence`` for one worker.

    Without ``base_seed`` it draws fresh entropy from the OS, so every process
    gets an independent stream (``worker_key`` is not needed then). With a base
    seed the stream is reproducible: ``worker_key`` (an int, a string, a tuple
    of those, or a callable returning one in the worker, such as
    :func:`torch_worker_id`) selects an independent child of the base seed
    through ``spawn_key``, so two workers never share a stream and a rerun gets
    the same ones.
    """
    from numpy.random import SeedSequence

    if base_seed is None:
        return SeedSequence()
    if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
        raise TypeError(f"base_seed must be a non-negative int or None, not {base_seed!r}")
    if worker_key is None:
        raise ValueError("a base seed needs a worker_key, or every worker would draw the same stream")
    key = worker_key() if callable(worker_key) else worker_key
    return SeedSequence(base_seed, spawn_key=_spawn_key(key))


def _spawn_key(key: object) -> "tuple[int, ...]":
    """Non-negative ints for SeedSequence.spawn_key; strings become stable 32-bit words."""
    parts = key if isinstance(key, tuple) else (key,)
    out: list[int] = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, (int, str)):
            raise TypeError(f"a worker key is an int, a str or a tuple of those, not {part!r}")
        if isinstance(part, int):
            if part < 0:
                raise ValueError(f"a worker key must not be negative: {part}")
            out.append(part)
        else:
            import hashlib

            digest = hashlib.sha256(part.encode()).digest()
            out.extend(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    return tuple(out)


def torch_worker_id() -> int:
    """The id of the PyTorch DataLoader worker this runs in (0 in the main process)."""
    from torch.utils.data import get_worker_info  # type: ignore[import-not-found, unused-ignore]

    info = get_worker_info()
    return 0 if info is None else int(info.id)


class Generator(ForkLocal, pickle="init"):
    """A ``numpy.random.Generator`` of this process's own.

    Built from :func:`worker_seed` in every new process: forked children (any
    route), and spawn or forkserver workers that receive it pickled (it is
    rebuilt there from the same arguments). Attribute access is delegated, so
    ``gen.random()``, ``gen.integers(10)`` and friends work; ``gen.generator`` is
    the numpy object itself. ``bit_generator`` names a class in
    ``numpy.random`` (``"PCG64"`` by default, ``"Philox"``, ``"SFC64"``...).
    """

    generator: "numpy.random.Generator"

    def __init__(
        self, seed: "int | None" = None, *, worker_key: "WorkerKey" = None, bit_generator: str = "PCG64"
    ) -> None:
        import numpy.random

        bit_generator_class = getattr(numpy.random, bit_generator, None)
        if not (
            isinstance(bit_generator_class, type)
            and issubclass(bit_generator_class, numpy.random.BitGenerator)
        ):
            raise ValueError(f"numpy.random has no bit generator {bit_generator!r}")
        self.generator = numpy.random.Generator(bit_generator_class(worker_seed(seed, worker_key)))
        self.pid = os.getpid()

    def __getattr__(self, name: str) -> "Any":
        return getattr(self.generator, name)
