"""robosuite tasks, perturbations, the fast renderer and the rollout harness."""

import os

# Headless software rendering; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")
