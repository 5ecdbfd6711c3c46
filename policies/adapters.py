"""Adapters for users' own policies: TorchScript modules, plain Python callables, robomimic checkpoints.

TorchScript (`model.pt` + `model.json`): the JSON declares the task and the observation keys, which are passed to
`forward` positionally in that order, each with a leading batch dimension of 1 (camera frames as uint8 HWC);
`forward` returns (1, 7). TorchScript archives hold compiled graphs and tensors, no pickled Python objects.

Callables (`package.module:name`): `name` is either a Policy factory called with the TaskSpec, or a function
`obs -> action`, optionally with an `obs_keys` attribute.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from envs.tasks import TaskSpec, get_task
from policies.base import Policy, image_key


class TorchScriptPolicy:
    def __init__(self, module: torch.jit.ScriptModule, task: TaskSpec, obs_keys: tuple[str, ...], action_dim: int):
        self.module, self.task, self.obs_keys, self.action_dim = module.eval(), task, obs_keys, action_dim

    @classmethod
    def load(cls, path: str | Path, task: TaskSpec | None = None) -> "TorchScriptPolicy":
        path = Path(path)
        spec_path = path.with_suffix(".json")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        if not spec_path.is_file():
            raise FileNotFoundError(
                f"{spec_path} is missing: a TorchScript policy needs a JSON obs spec beside it "
                '({"task": "lift", "obs_keys": ["agentview_image", "robot0_eef_pos"], "action_dim": 7})'
            )
        spec = json.loads(spec_path.read_text())
        missing = [k for k in ("task", "obs_keys") if k not in spec]
        if missing:
            raise ValueError(f"{spec_path} lacks {', '.join(missing)}")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise ValueError(f"{path} is not a TorchScript archive ({str(exc).splitlines()[0]})") from None
        policy_task = get_task(spec["task"])
        action_dim = int(spec.get("action_dim", 7))
        if action_dim != 7:
            raise ValueError(f"{path}: action_dim {action_dim} does not match task {policy_task.name!r}'s 7 (OSC pose + gripper)")
        return cls(module, policy_task, tuple(spec["obs_keys"]), action_dim)

    def reset(self) -> None:
        pass

    @torch.inference_mode()
    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        inputs = [torch.from_numpy(np.ascontiguousarray(obs[k]))[None] for k in self.obs_keys]
        inputs = [x if x.dtype == torch.uint8 else x.float() for x in inputs]
        return self.module(*inputs)[0].numpy().astype(float)


class CallablePolicy:
    """Wraps `obs -> action`."""

    action_dim = 7

    def __init__(self, function: Callable[[Mapping[str, np.ndarray]], np.ndarray], task: TaskSpec):
        self.function, self.task = function, task
        self.obs_keys = tuple(getattr(function, "obs_keys", (image_key(task.camera),)))

    def reset(self) -> None:
        reset = getattr(self.function, "reset", None)
        if callable(reset):
            reset()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.function(obs), dtype=float)


def load_callable(reference: str, task: TaskSpec | None) -> Policy:
    module_name, _, attribute = reference.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {reference!r} ({exc}); expected package.module:name") from None
    task = task or get_task(getattr(target, "task", "lift"))
    if isinstance(target, type):
        policy = target(task)
        policy.task = getattr(policy, "task", task)
        return policy
    return CallablePolicy(target, task)


def load_adapter(reference: str, task: TaskSpec | None) -> Policy:
    """Picks the adapter from the reference: a TorchScript file or a Python callable."""
    if Path(reference).suffix in (".pt", ".ts"):
        return TorchScriptPolicy.load(reference, task)
    if Path(reference).suffix == ".pth":
        from policies.robomimic_adapter import RobomimicPolicy

        return RobomimicPolicy(reference, task)
    return load_callable(reference, task)
