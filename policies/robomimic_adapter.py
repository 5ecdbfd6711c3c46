"""robomimic checkpoints (`.pth`) as FailScope policies (optional extra: `pip install failscope[robomimic]`).

The checkpoint is read with `torch.load(weights_only=True)`, so a file that would need arbitrary unpickling is
refused rather than executed. Observations are converted the way robomimic's own robosuite wrapper does: camera
frames upright (FailScope renders them upright already; robomimic flips robosuite's), then HWC uint8 → CHW float
in [0, 1]; `object` is robosuite's `object-state`. `start_episode()` is called on every reset, as robomimic requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from envs.tasks import TASKS, TaskSpec
from policies.threads import step_threads

ROBOMIMIC_KEY_ALIASES = {"object": "object-state"}


def task_from_env_name(env_name: str) -> TaskSpec:
    for spec in TASKS.values():
        if spec.env_name == env_name:
            return spec
    valid = ", ".join(f"{s.env_name} ({s.name})" for s in TASKS.values())
    raise ValueError(f"robomimic checkpoint is for env {env_name!r}; FailScope tasks: {valid}")


class RobomimicPolicy:
    def __init__(self, path: str | Path, task: TaskSpec | None = None):
        try:
            import robomimic.utils.file_utils as FileUtils
            import robomimic.utils.obs_utils as ObsUtils
        except ImportError:
            raise ValueError(
                f"{path}: robomimic checkpoints need the extra: pip install 'failscope[robomimic]'"
            ) from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path} is not a robomimic checkpoint loadable without executing code ({exc})") from None
        missing = [k for k in ("model", "config", "algo_name", "env_metadata", "shape_metadata") if k not in ckpt]
        if missing:
            raise ValueError(f"{path} lacks robomimic checkpoint entries: {', '.join(missing)}")
        self.task = task_from_env_name(ckpt["env_metadata"]["env_name"])
        action_dim = int(ckpt["shape_metadata"]["ac_dim"])
        if action_dim != 7:
            raise ValueError(f"{path}: action dim {action_dim}; task {self.task.name!r} takes 7 (OSC pose + gripper)")
        self.action_dim = action_dim
        self.policy, _ = FileUtils.policy_from_checkpoint(ckpt_dict=ckpt, device=torch.device("cpu"))
        self._obs_utils = ObsUtils
        self.robomimic_keys = tuple(ckpt["shape_metadata"]["all_obs_keys"])
        self.obs_keys = tuple(ROBOMIMIC_KEY_ALIASES.get(k, k) for k in self.robomimic_keys)

    def reset(self) -> None:
        self.policy.start_episode()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        converted = {}
        for key in self.robomimic_keys:
            value = np.asarray(obs[ROBOMIMIC_KEY_ALIASES.get(key, key)])
            if self._obs_utils.key_is_obs_modality(key=key, obs_modality="rgb"):
                value = self._obs_utils.process_obs(obs=value, obs_key=key)
            converted[key] = value
        with step_threads():
            return np.asarray(self.policy(ob=converted), dtype=float)
