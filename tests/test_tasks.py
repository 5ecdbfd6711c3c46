import pytest

from envs.tasks import TASKS, get_task


def test_every_task_has_the_fields_perturbations_need():
    assert set(TASKS) >= {"lift", "can", "square", "stack"}
    for spec in TASKS.values():
        assert spec.objects and len(spec.objects) == len(spec.object_names)
        assert 0 < spec.event_step < spec.horizon


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: can, lift, square, stack"):
        get_task("lfit")
