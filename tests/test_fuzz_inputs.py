"""Property tests of input validation: whatever a user writes for a perturbation parameter or a `key=value`
override, the answer is the value accepted, or one ValueError (SystemExit with one `error:` line for a CLI) that
names what was wrong and the valid range or choices; never a TypeError, an OverflowError or a simulator crash."""

import dataclasses
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.cli import parse_config
from envs.perturbations import get_perturbations, task_perturbations, validate_composition
from envs.tasks import get_task

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None
)
"""Modest and reproducible: the same examples every run, nothing written to the checkout."""

LIFT = task_perturbations("lift")
EXAMPLES = {}  # one catalogue perturbation per family: valid, so each test breaks just the field it fuzzes
for perturbation in LIFT.values():
    EXAMPLES.setdefault(perturbation.family, perturbation)
FIELDS = [
    (family, f.name)
    for family, example in EXAMPLES.items()
    for f in dataclasses.fields(example)
    if f.name != "description"
]

numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.integers(min_value=10**300, max_value=10**400),  # past float's range
)
anything = st.one_of(
    st.none(),
    numbers,
    st.text(max_size=6),
    st.binary(max_size=3),
    st.lists(numbers, max_size=5),
    st.tuples(numbers, numbers, numbers),
    st.lists(st.text(max_size=3), max_size=4),
    st.lists(st.lists(numbers, max_size=2), max_size=3),
    st.dictionaries(st.text(max_size=2), numbers, max_size=2),
    st.just(object()),
)


def finite_params(perturbation) -> bool:
    """An accepted perturbation holds plain finite numbers (or, for the few text fields, text)."""
    for name, value in dataclasses.asdict(perturbation).items():
        if name in ("name", "description", "shape") or (name in ("at_step", "direction") and value is None):
            continue
        values = value if isinstance(value, (tuple, list)) else [value]
        if not all(_plain_number(v) for v in values):
            return False
    return True


def _plain_number(value) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


@pytest.mark.parametrize("family, field", FIELDS, ids=[f"{f}.{n}" for f, n in FIELDS])
@FAST
@given(value=anything)
def test_any_parameter_value_is_accepted_or_a_value_error_naming_it(family, field, value):
    example = EXAMPLES[family]
    try:
        perturbation = dataclasses.replace(example, **{field: value})
    except ValueError as exc:
        message = str(exc)
        assert field in message or (field == "at_step" and "cannot fire" in message), message
        assert "\n" not in message
        assert re.search(r"must be|needs|valid|cannot fire", message), message
        return
    assert finite_params(perturbation), f"accepted {field}={value!r}: {perturbation}"
    assert perturbation.timing_kind in type(perturbation).timing_kinds


@FAST
@given(
    names=st.lists(st.one_of(st.sampled_from(sorted(LIFT)), st.text(max_size=8), st.none(), st.integers()), max_size=4)
)
def test_perturbation_names_resolve_or_list_the_valid_ones(names):
    try:
        chosen = get_perturbations("lift", names)
    except ValueError as exc:
        assert "valid: " in str(exc) and "cube_color_red" in str(exc)
        return
    assert [p.name for p in chosen] == [n.strip() for n in names]
    try:
        validate_composition("lift", chosen)
    except ValueError as exc:
        assert "given twice" in str(exc)


@FAST
@given(at_step=st.integers(min_value=-5, max_value=500), target=st.integers(min_value=-3, max_value=3))
def test_timing_and_target_are_checked_against_the_task(at_step, target):
    example = EXAMPLES["object_nudge"]
    task = get_task("lift")
    try:
        perturbation = dataclasses.replace(example, at_step=at_step, target=target)
        perturbation.check_task(task)
    except ValueError as exc:
        assert re.search(r"at_step|horizon|target", str(exc)), str(exc)
        assert at_step < 0 or at_step >= task.horizon or not 0 <= target < len(task.objects)
        return
    assert 0 <= at_step < task.horizon and 0 <= target < len(task.objects)


# -- key=value overrides ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Config:
    task: str = "lift"
    episodes: int = 2
    alpha: float = 0.1
    record: bool = False


keys = st.one_of(st.sampled_from([f.name for f in dataclasses.fields(Config)]), st.text(max_size=6))
values = st.one_of(
    st.text(max_size=8),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["", "null", "???", "${x}", "${task}", "[1,2", "{a: 1}", "true", "1e400", "nan", "0x10", "'a'"]),
)
argument = st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, values), st.text(max_size=8))


@FAST
@given(argv=st.lists(argument, max_size=4))
def test_overrides_parse_or_exit_with_one_error_line(argv):
    try:
        config = parse_config(Config, argv)
    except SystemExit as exc:
        message = str(exc.code)
        assert message.startswith("error: ") and "\n" not in message, message
        return
    assert isinstance(config, Config)
    assert isinstance(config.task, str) and isinstance(config.episodes, int) and isinstance(config.record, bool)
    assert isinstance(config.alpha, float)


@FAST
@given(value=st.one_of(st.text(max_size=6), st.integers().map(str), st.floats().map(str)))
def test_a_bad_int_override_names_the_key(value):
    try:
        config = parse_config(Config, [f"episodes={value}"])
    except SystemExit as exc:
        assert "episodes" in str(exc.code), exc.code
        return
    assert isinstance(config.episodes, int)


# -- the simulator ----------------------------------------------------------------------------------------------

in_range = {
    "object_size": st.tuples(*[st.floats(1e-9, 0.2)] * 3).map(lambda h: {"half_size": h}),  # 0.2: past the bound
    "table_size": st.tuples(st.floats(1e-9, 3.0), st.floats(1e-9, 3.0), st.floats(1e-9, 3.0)).map(
        lambda s: {"full_size": s}
    ),
    "object_mass": st.floats(1e-9, 100.0).map(lambda s: {"scale": s}),
    "friction": st.floats(1e-9, 100.0).map(lambda s: {"scale": s}),
    "light_intensity": st.floats(0.0, 10.0).map(lambda s: {"scale": s}),
    "camera_pose": st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(-0.5, 0.5)).map(
        lambda o: {"offset": o}
    ),
    "init_offset": st.tuples(st.floats(-0.25, 0.25), st.floats(-0.25, 0.25)).map(lambda o: {"offset": o}),
}
"""Accepted parameter values at the edges of their ranges, for the families that change the physics or the view."""


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(
    choice=st.sampled_from(sorted(in_range)).flatmap(lambda f: st.tuples(st.just(f), in_range[f])),
    seed=st.integers(0, 20),
)
def test_accepted_values_apply_without_a_simulator_crash(lift_runner, choice, seed):
    """Whatever validation accepts, the scene takes: applied at reset, a few steps of physics, no error, or refused
    as a no-op when the values are the nominal ones. (This found object_size's old bound of 0.2 m: boxes that big
    reach the gripper at reset and blow up the physics.)"""
    family, params = choice
    try:
        perturbation = dataclasses.replace(EXAMPLES[family], **params)
    except ValueError:
        return  # rejected by validation, with a ValueError: also fine
    lift_runner.scene.restore()
    episode = lift_runner.episode([perturbation], seed=seed, render_frames=False)
    try:
        try:
            episode.start()
        except ValueError as exc:  # the nominal value itself (an offset of 0): refused as a no-op, in one line
            assert "changes nothing" in str(exc)
            return
        for _ in range(3):
            if not episode.done:
                episode.step(np.zeros(7))
    finally:
        lift_runner.scene.restore()
    assert episode.outcome != "sim_error", f"{family} {params} was accepted but crashed the simulator: {episode.error}"
