"""inherit.numpy: a Generator per process, on every fork route and through pickling to spawn workers."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

import inherit  # noqa: E402
from inherit.numpy import Generator, worker_seed  # noqa: E402
from inherit.testing import available_routes, run_in_child  # noqa: E402


def test_import_inherit_does_not_load_numpy() -> None:
    code = "import sys, inherit; print('numpy' in sys.modules, 'inherit.numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("route", available_routes())
def test_every_child_draws_its_own_stream(route: str) -> None:
    gen = Generator()
    draws = {tuple(run_in_child(lambda: gen.random(4).tolist(), route=route)) for _ in range(3)}
    draws.add(tuple(gen.random(4).tolist()))
    assert len(draws) == 4


def test_a_plain_numpy_generator_is_duplicated_without_it() -> None:
    """The bug this exists for: a Generator built in the parent repeats in every child."""
    plain = np.random.default_rng()
    children = {tuple(run_in_child(lambda: plain.random(4).tolist(), route="libc.fork")) for _ in range(3)}
    assert len(children) == 1


def test_seeded_streams_are_reproducible_and_independent_per_worker() -> None:
    streams = [
        np.random.Generator(np.random.PCG64(worker_seed(1234, k))).random(3).tolist() for k in range(4)
    ]
    again = [np.random.Generator(np.random.PCG64(worker_seed(1234, k))).random(3).tolist() for k in range(4)]
    assert streams == again
    assert len({tuple(s) for s in streams}) == 4
    named = worker_seed(1234, "worker-a").generate_state(2).tolist()
    assert named == worker_seed(1234, "worker-a").generate_state(2).tolist()
    assert named != worker_seed(1234, "worker-b").generate_state(2).tolist()
    assert worker_seed(1234, lambda: 3).spawn_key == worker_seed(1234, 3).spawn_key


def test_without_a_base_seed_every_call_is_fresh() -> None:
    assert worker_seed().entropy != worker_seed().entropy


@pytest.mark.parametrize(
    ("seed", "key", "error"),
    [
        (1, None, ValueError),
        (-1, 0, TypeError),
        (1.5, 0, TypeError),
        (True, 0, TypeError),
        ("1", 0, TypeError),
        (1, -3, ValueError),
        (1, 2.0, TypeError),
        (1, (1, [2]), TypeError),
    ],
)
def test_bad_seeds_and_keys_are_clear_errors(seed: object, key: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        worker_seed(seed, key)  # type: ignore[arg-type]


def test_bad_bit_generator_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="bit generator"):
        Generator(bit_generator="random")


def test_pickles_by_rebuilding_and_delegates() -> None:
    gen = Generator(7, worker_key=1, bit_generator="Philox")
    again = pickle.loads(pickle.dumps(gen))
    assert again.random(3).tolist() == Generator(7, worker_key=1, bit_generator="Philox").random(3).tolist()
    assert isinstance(gen.generator, np.random.Generator) and 0 <= gen.integers(10) < 10


SPAWN = """
import json, multiprocessing, sys
from inherit.numpy import Generator

class Dataset:  # what a PyTorch Dataset holding a generator looks like to pickle
    def __init__(self):
        self.rng = Generator()

def draw(dataset):
    return dataset.rng.random(3).tolist()

if __name__ == "__main__":
    dataset = Dataset()
    with multiprocessing.get_context(sys.argv[1]).Pool(3) as pool:
        print(json.dumps(pool.map(draw, [dataset] * 6, chunksize=1) + [draw(dataset)]))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_an_attribute_of_an_object_sent_to_workers(method: str, tmp_path: Path) -> None:
    script = tmp_path / "spawn_numpy.py"
    script.write_text(textwrap.dedent(SPAWN))
    proc = subprocess.run(
        [sys.executable, str(script), method], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    streams = [tuple(s) for s in json.loads(proc.stdout)]
    assert len(set(streams)) == len(streams)
    assert inherit.generation()  # the parent is untouched
