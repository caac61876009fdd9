"""``inherit.Random``: reseeds itself in every forked child, unless it was seeded explicitly.

Every drawing method of ``random.Random`` is exercised as the *first* draw in a child (one
instance per method), because each one must notice the fork by itself. A plain
``random.Random`` goes through the same code as a control: it must repeat the parent's
values, which shows the comparison is able to fail.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any

import pytest

import inherit
from inherit.testing import run_in_child
from support import run_case

Draw = Callable[[random.Random], Any]

POPULATION = list(range(1_000))


def _shuffled(rng: random.Random) -> list[int]:
    items = list(range(100))
    rng.shuffle(items)
    return items


# One call of each method: a first draw that did not see the fork must show up in that very
# call. Arguments give each call enough entropy that independent streams collide with
# negligible odds.
DRAWS: dict[str, Draw] = {
    "random": lambda r: r.random(),
    "getrandbits": lambda r: r.getrandbits(128),
    "randbytes": lambda r: r.randbytes(32),
    "randrange": lambda r: r.randrange(10**30),
    "randint": lambda r: r.randint(0, 2**96),
    "choice": lambda r: r.choice(range(2**62)),
    "choices": lambda r: r.choices(POPULATION, k=32),
    "choices(weights)": lambda r: r.choices(POPULATION, weights=POPULATION, k=32),
    "shuffle": _shuffled,
    "sample": lambda r: r.sample(range(10**6), 16),
    "uniform": lambda r: r.uniform(-5.0, 5.0),
    "triangular": lambda r: r.triangular(0.0, 10.0, 3.0),
    "gauss": lambda r: r.gauss(0.0, 1.0),
    "normalvariate": lambda r: r.normalvariate(0.0, 1.0),
    "lognormvariate": lambda r: r.lognormvariate(0.0, 1.0),
    "expovariate": lambda r: r.expovariate(1.5),
    "vonmisesvariate": lambda r: r.vonmisesvariate(1.0, 4.0),
    "gammavariate": lambda r: r.gammavariate(2.5, 1.0),
    "betavariate": lambda r: r.betavariate(2.0, 3.0),
    "paretovariate": lambda r: r.paretovariate(2.0),
    "weibullvariate": lambda r: r.weibullvariate(1.0, 1.5),
}
if sys.version_info >= (3, 12):
    DRAWS["binomialvariate"] = lambda r: r.binomialvariate(2**40, 0.5)  # type: ignore[attr-defined]

# Public methods that do not draw.
NOT_DRAWING = {"seed", "getstate", "setstate"}


def _primed(rng: random.Random) -> random.Random:
    """Draw a little first, ending with gauss(), which caches a second value for the next call."""
    rng.random()
    rng.gauss(0.0, 1.0)
    return rng


def _method_name(key: str) -> str:
    return key.split("(")[0]


def test_every_drawing_method_is_covered() -> None:
    """If a Python version adds a drawing method, this table must grow with it."""
    public = {
        name
        for name in dir(random.Random)
        if not name.startswith("_") and callable(getattr(random.Random, name))
    }
    assert public - NOT_DRAWING == {_method_name(key) for key in DRAWS}


# --- auto-seeded instances reseed in every child ----------------------------------------------


def _raw_state(rng: random.Random) -> Any:
    """The generator's state as it is, without the check inherit.Random.getstate() makes."""
    return random.Random.getstate(rng)


def _draw_all(rngs: dict[str, random.Random], control: dict[str, random.Random]) -> dict[str, Any]:
    """In the child: the first draw of each instance is by the method it is named after.

    Also returns the raw state right after that draw: it equals the parent's (after the same
    draw) exactly when the draw did not reseed first.
    """
    seen: dict[str, Any] = {}
    for name, group in (("inherit", rngs), ("control", control)):
        seen[name] = {key: (DRAWS[key](rng), _raw_state(rng)) for key, rng in group.items()}
    return seen


def test_every_method_reseeds_in_child(fork_route: str) -> None:
    """Per method, as the first draw: two children and the parent's continuation all differ."""
    rngs = {key: _primed(inherit.Random()) for key in DRAWS}
    control = {key: _primed(random.Random()) for key in DRAWS}
    states = {key: rng.getstate() for key, rng in rngs.items()}

    first = run_in_child(_draw_all, rngs, control, route=fork_route)
    second = run_in_child(_draw_all, rngs, control, route=fork_route)
    parent = _draw_all(rngs, control)

    for key in DRAWS:
        # The control proves each draw is a function of the inherited state ...
        assert first["control"][key] == parent["control"][key] == second["control"][key], key
        # ... and inherit.Random left that state behind before drawing.
        for child in (first, second):
            value, state = child["inherit"][key]
            assert value != parent["inherit"][key][0], f"{key}: the child drew the parent's value"
            assert state != parent["inherit"][key][1], f"{key}: the child kept the parent's state"
        assert first["inherit"][key][0] != second["inherit"][key][0], f"{key}: two children agree"
        # The parent itself was not reseeded by forking.
        reference = random.Random()
        reference.setstate(states[key])
        assert parent["inherit"][key][0] == DRAWS[key](reference), f"{key}: parent's stream changed"


def test_gauss_cached_value_is_not_reused_in_child(fork_route: str) -> None:
    """gauss() keeps its second value for the next call; a child must not get the parent's."""
    rng = inherit.Random()
    rng.gauss(0.0, 1.0)  # the parent's next gauss() is now the cached value
    plain = random.Random()
    plain.gauss(0.0, 1.0)

    def child() -> tuple[float, float]:
        return rng.gauss(0.0, 1.0), plain.gauss(0.0, 1.0)

    child_value, plain_child_value = run_in_child(child, route=fork_route)
    assert plain_child_value == plain.gauss(0.0, 1.0), "control: a plain Random hands the cached value on"
    assert child_value != rng.gauss(0.0, 1.0)


def test_getstate_in_child_shows_the_new_state(fork_route: str) -> None:
    """getstate() as the first call in a child already reflects the reseed."""
    rng = _primed(inherit.Random())

    def child() -> Any:
        return rng.getstate()

    assert run_in_child(child, route=fork_route) != rng.getstate()


def test_reseeds_once_per_child_not_per_draw(fork_route: str) -> None:
    """After the reseed the child's stream is an ordinary one: it can be replayed from its state."""
    rng = inherit.Random()

    def child() -> tuple[Any, list[float], list[float]]:
        rng.random()
        state = rng.getstate()
        values = [rng.random() for _ in range(8)]
        replay = random.Random()
        replay.setstate(state)
        return state, values, [replay.random() for _ in range(8)]

    _, values, replayed = run_in_child(child, route=fork_route)
    assert values == replayed


def test_grandchild_reseeds_again(fork_route: str) -> None:
    """The grandchild gets a stream different from the child's."""
    rng = inherit.Random()

    def grandchild() -> list[float]:
        return [rng.random() for _ in range(8)]

    def child() -> tuple[list[float], list[float]]:
        route = "os.fork" if fork_route == "multiprocessing" else fork_route
        grand = run_in_child(grandchild, route=route)
        return grand, [rng.random() for _ in range(8)]

    grand, own = run_in_child(child, route=fork_route)
    assert grand != own
    assert own != [rng.random() for _ in range(8)]


# --- explicitly seeded instances keep their stream ------------------------------------------------


SEEDS = [42, 0, "a string seed", b"bytes seed"]


def _seeded_draws(rng: random.Random) -> list[Any]:
    return [rng.random(), rng.getrandbits(64), rng.gauss(0.0, 1.0), rng.randbytes(8), rng.randrange(10**9)]


@pytest.mark.parametrize("seed", SEEDS, ids=repr)
def test_seeded_instance_continues_its_stream_in_child(fork_route: str, seed: Any) -> None:
    """Random(seed) asked for a repeatable stream: a child continues exactly random.Random(seed).

    Documented behaviour: the child does not reseed, and its values are the ones the parent
    produces next. The gauss() cache is carried over as well, as with random.Random.
    """
    rng = _primed(inherit.Random(seed))
    assert rng.reseeds_on_fork is False

    def child() -> tuple[list[Any], bool]:
        return _seeded_draws(rng), rng.reseeds_on_fork

    values, reseeds = run_in_child(child, route=fork_route)
    reference = _primed(random.Random(seed))
    expected = _seeded_draws(reference)
    assert reseeds is False
    assert values == expected
    assert _seeded_draws(rng) == expected, "the parent's next values differ from the child's"


def test_seed_with_a_value_makes_the_stream_deterministic(fork_route: str) -> None:
    """seed(42) on an auto-seeded instance switches reseeding off."""
    rng = inherit.Random()
    assert rng.reseeds_on_fork is True
    rng.seed(42)
    assert rng.reseeds_on_fork is False

    def child() -> list[Any]:
        return _seeded_draws(rng)

    assert run_in_child(child, route=fork_route) == _seeded_draws(random.Random(42))


@pytest.mark.parametrize("reseed", [lambda r: r.seed(), lambda r: r.seed(None)], ids=["seed()", "seed(None)"])
def test_seed_none_turns_reseeding_back_on(fork_route: str, reseed: Callable[[random.Random], None]) -> None:
    """seed() or seed(None) on a seeded instance: children get their own streams again."""
    rng = inherit.Random(42)
    reseed(rng)
    assert rng.reseeds_on_fork is True  # type: ignore[attr-defined]

    def child() -> list[float]:
        return [rng.random() for _ in range(8)]

    first = run_in_child(child, route=fork_route)
    second = run_in_child(child, route=fork_route)
    parent = [rng.random() for _ in range(8)]
    assert first != parent and second != parent and first != second


def test_setstate_makes_the_stream_deterministic(fork_route: str) -> None:
    """setstate() restores a known stream, so the child continues it."""
    source = _primed(random.Random(7))
    rng = inherit.Random()
    rng.setstate(source.getstate())
    assert rng.reseeds_on_fork is False

    def child() -> list[Any]:
        return _seeded_draws(rng)

    assert run_in_child(child, route=fork_route) == _seeded_draws(source)


# --- a drop-in random.Random without forks ----------------------------------------------------------


def test_is_a_random_random() -> None:
    rng = inherit.Random()
    assert isinstance(rng, random.Random)
    assert rng.reseeds_on_fork is True


def test_getstate_setstate_round_trip() -> None:
    """States move between inherit.Random and random.Random in both directions."""
    rng = _primed(inherit.Random())
    state = rng.getstate()
    values = [rng.random() for _ in range(8)]
    rng.setstate(state)
    assert [rng.random() for _ in range(8)] == values
    plain = random.Random()
    plain.setstate(state)
    assert [plain.random() for _ in range(8)] == values
    other = inherit.Random()
    other.setstate(plain.getstate())
    assert other.getstate() == plain.getstate()


@pytest.mark.parametrize("key", list(DRAWS))
def test_seeded_values_match_random_random(key: str) -> None:
    """Without a fork, every method gives exactly what random.Random gives for the same seed."""
    ours = _primed(inherit.Random(1234))
    theirs = _primed(random.Random(1234))
    assert DRAWS[key](ours) == DRAWS[key](theirs)


INTERRUPTED_SEED = r"""
import random, signal

class Interrupt(BaseException):
    pass

armed = [False]

def on_alarm(signum, frame):
    if armed[0]:  # one interrupt per window: a late second alarm is not part of the case
        armed[0] = False
        raise Interrupt

signal.signal(signal.SIGALRM, on_alarm)
explicit = inherit.Random(42).getstate()
stats = {"interrupted": 0, "repeats_without_promise": 0}
for i in range(3000):
    r = inherit.Random(42)
    try:
        armed[0] = True
        signal.setitimer(signal.ITIMER_REAL, random.uniform(0, 30e-6))
        r.seed()  # back to reseeding in every new process
        signal.setitimer(signal.ITIMER_REAL, 0)
        armed[0] = False
        continue
    except Interrupt:
        signal.setitimer(signal.ITIMER_REAL, 0)
        armed[0] = False
    stats["interrupted"] += 1
    # Not reseeding means "explicitly seeded": then the state must still be that seed's, or a
    # fork would hand one fresh, unseeded stream to two processes.
    if not r.reseeds_on_fork and r.getstate() != explicit:
        stats["repeats_without_promise"] += 1
out.update(stats)
"""


def test_an_interrupted_seed_never_leaves_a_fresh_stream_that_forks_repeat() -> None:
    out = run_case(INTERRUPTED_SEED, timeout=120)
    assert out["interrupted"] >= 20, f"too few interrupts landed: {out}"
    assert out["repeats_without_promise"] == 0, out
