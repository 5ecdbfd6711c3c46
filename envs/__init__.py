"""robosuite tasks, perturbations, the fast renderer and the rollout harness."""

import os

# Headless software rendering; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

from gymnasium.envs.registration import register

register(id="failscope/Lift-v0", entry_point="envs.gym_env:PerturbedTask", kwargs={"task": "lift"}, max_episode_steps=None)
register(id="failscope/Can-v0", entry_point="envs.gym_env:PerturbedTask", kwargs={"task": "can"}, max_episode_steps=None)
register(id="failscope/Square-v0", entry_point="envs.gym_env:PerturbedTask", kwargs={"task": "square"}, max_episode_steps=None)
register(id="failscope/Stack-v0", entry_point="envs.gym_env:PerturbedTask", kwargs={"task": "stack"}, max_episode_steps=None)
