"""robosuite tasks, perturbations, the fast renderer and the rollout harness.

Importing the package registers the Gymnasium ids below; `gymnasium.make("envs:failscope/Lift-v0")` imports it first,
so the ids work from a fresh interpreter (Gymnasium 1.x has no plugin entry points).
"""

import contextlib
import os

# Headless software rendering; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

# Mesa's software GL (llvmpipe) and triton (which torch imports lazily, e.g. from its optimizers) each bundle LLVM:
# importing triton after any GL context exists crashes the process, importing it first is safe. Every FailScope path
# to a GL context (ours or robosuite's own renderer) imports this package first.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

from gymnasium.envs.registration import register

register(
    id="failscope/Lift-v0", entry_point="envs.gym_env:PerturbedTask", kwargs={"task": "lift"}, max_episode_steps=None
)
register(
    id="failscope/Can-v0", entry_point="envs.gym_env:PerturbedTask", kwargs={"task": "can"}, max_episode_steps=None
)
register(
    id="failscope/Square-v0",
    entry_point="envs.gym_env:PerturbedTask",
    kwargs={"task": "square"},
    max_episode_steps=None,
)
register(
    id="failscope/Stack-v0", entry_point="envs.gym_env:PerturbedTask", kwargs={"task": "stack"}, max_episode_steps=None
)
