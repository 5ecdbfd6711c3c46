import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest

from envs.rollout import get_runner


@pytest.fixture(scope="session")
def lift_runner():
    """One live Lift scene for the whole test session (building one costs about a second)."""
    return get_runner("lift")
