import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest

from envs.rollout import get_runner


@pytest.fixture
def lift_runner():
    """The process's live Lift scene (built once: about a second), restored to nominal: a rollout leaves its
    perturbations applied until the next reset, and other tests share this runner."""
    runner = get_runner("lift")
    runner.scene.restore()
    return runner
