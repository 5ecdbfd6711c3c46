"""Adapters for users' own policies: TorchScript modules, plain Python callables, robomimic checkpoints.

TorchScript (`model.pt` + `model.json`): the JSON declares the task and the observation keys, which are passed to
`forward` positionally in that order, each with a leading batch dimension of 1 (camera frames as uint8 HWC);
`forward` returns (1, 7). TorchScript archives hold compiled graphs and tensors, no pickled Python objects.

Callables (`package.module:name`): `name` is either a Policy factory called with the TaskSpec, or a function
`obs -> action`, optionally with an `obs_keys` attribute.

Every adapter is checked when it loads (`check_policy`), not at its first act minutes into a run: the Policy
protocol (obs_keys a tuple of strings, action_dim 7, callable reset and act), then one test action on a dummy
observation (zeros in the shapes the harness gives those keys, `dummy_observation`) that must return (action_dim,).
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from envs.tasks import TaskSpec, get_task
from policies.base import Policy, image_key
from policies.threads import step_threads

ACTION_DIM = 7
"""Every task's action: OSC pose delta (6) + gripper."""


class TorchScriptPolicy:
    def __init__(self, module: torch.jit.ScriptModule, task: TaskSpec, obs_keys: tuple[str, ...], action_dim: int):
        self.module, self.task, self.obs_keys, self.action_dim = module.eval(), task, obs_keys, action_dim

    @classmethod
    def load(cls, path: str | Path, task: TaskSpec | None = None) -> TorchScriptPolicy:
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
            raise ValueError(
                f"{path}: action_dim {action_dim} does not match task {policy_task.name!r}'s 7 (OSC pose + gripper)"
            )
        return cls(module, policy_task, tuple(spec["obs_keys"]), action_dim)

    def reset(self) -> None:
        pass

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        inputs = [torch.from_numpy(np.ascontiguousarray(obs[k]))[None] for k in self.obs_keys]
        inputs = [x if x.dtype == torch.uint8 else x.float() for x in inputs]
        with step_threads(), torch.inference_mode():
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
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot import {reference!r} ({exc}); expected package.module:name") from None
    if not callable(target):
        raise ValueError(
            f"policy {reference!r} is a {type(target).__name__}, not a policy: name a Policy class (called with the "
            "TaskSpec) or a function obs -> action, as package.module:name"
        )
    task = task or get_task(getattr(target, "task", "lift"))
    if isinstance(target, type):
        try:
            policy = target(task)
        except Exception as exc:  # user code: any failure to build is the user's to fix, in one line
            raise ValueError(f"policy {reference!r}: {attribute}(task) failed ({_one_line(exc)})") from None
        if not isinstance(getattr(policy, "task", None), TaskSpec):
            policy.task = task
        return policy
    return CallablePolicy(target, task)


def load_adapter(reference: str, task: TaskSpec | None) -> Policy:
    """Picks the adapter from the reference (a TorchScript file, a robomimic checkpoint, a Python callable) and
    checks what it loaded (`check_policy`)."""
    if Path(reference).suffix in (".pt", ".ts"):
        policy = TorchScriptPolicy.load(reference, task)
    elif Path(reference).suffix == ".pth":
        from policies.robomimic_adapter import RobomimicPolicy

        policy = RobomimicPolicy(reference, task)
    else:
        policy = load_callable(reference, task)
    return check_policy(policy, reference)


# ------------------------------------------------------------------------------------------------------ checks
ROBOT_OBS_DIMS = {
    "robot0_joint_pos": 7,
    "robot0_joint_pos_cos": 7,
    "robot0_joint_pos_sin": 7,
    "robot0_joint_vel": 7,
    "robot0_joint_acc": 7,
    "robot0_eef_pos": 3,
    "robot0_eef_quat": 4,
    "robot0_eef_quat_site": 4,
    "robot0_gripper_qpos": 2,
    "robot0_gripper_qvel": 2,
    "robot0_proprio-state": 50,
}
"""robosuite's Panda observations (the same for every task)."""
OBJECT_STATE_DIMS = {"lift": 10, "can": 14, "square": 14, "stack": 23}
"""Length of robosuite's `object-state` per task."""


def obs_shape(task: TaskSpec, key: str) -> tuple[int, ...] | None:
    """The shape of observation `key` in `task` as the harness provides it (None when the rules do not know it):
    camera frames (S, S, 3), the Panda's keys, `object-state`, and robosuite's object keys (`*_pos`, `*_to_*`: 3,
    `*_quat`: 4)."""
    if key.endswith("_image"):
        return (task.image_size, task.image_size, 3)
    if key in ROBOT_OBS_DIMS:
        return (ROBOT_OBS_DIMS[key],)
    if key == "object-state":
        return (OBJECT_STATE_DIMS[task.name],) if task.name in OBJECT_STATE_DIMS else None
    if key.endswith("_quat"):
        return (4,)
    if key.endswith("_pos") or "_to_" in key:
        return (3,)
    return None


def dummy_observation(task: TaskSpec, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Zeros in the harness's shape for each key (frames uint8, the rest float64); None when a key's shape is not
    known (the test action is then skipped rather than fed a guess)."""
    shapes = {key: obs_shape(task, key) for key in keys}
    if any(shape is None for shape in shapes.values()):
        return None
    return {k: np.zeros(s, dtype=np.uint8 if k.endswith("_image") else np.float64) for k, s in shapes.items()}


def check_policy(policy: object, reference: str) -> Policy:
    """`policy` when it keeps the Policy protocol and acts on a dummy observation; else a one-line ValueError
    naming `reference` and what is wrong, so a bad `policy=` fails at load rather than at its first act."""
    task = getattr(policy, "task", None)
    if not isinstance(task, TaskSpec):
        raise ValueError(f"policy {reference!r} has no task (a TaskSpec attribute); got {task!r}")
    missing = [name for name in ("obs_keys", "action_dim", "reset", "act") if not hasattr(policy, name)]
    if missing:
        raise ValueError(
            f"policy {reference!r} ({type(policy).__name__}) lacks {', '.join(missing)}; a policy has obs_keys, "
            "action_dim, reset() and act(obs) (policies/base.py)"
        )
    keys = policy.obs_keys
    if isinstance(keys, str) or not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"policy {reference!r}: obs_keys must be a tuple of observation names, got {keys!r}")
    if policy.action_dim != ACTION_DIM or isinstance(policy.action_dim, bool):
        raise ValueError(
            f"policy {reference!r}: action_dim is {policy.action_dim!r}; task {task.name!r} takes {ACTION_DIM} "
            "(OSC pose + gripper)"
        )
    for name in ("reset", "act"):
        if not callable(getattr(policy, name)):
            raise ValueError(f"policy {reference!r}: {name} is not callable")
    obs = dummy_observation(task, keys)
    if obs is None:
        return policy
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # zeros are no real scene: quiet about them
            warnings.simplefilter("ignore")
            policy.reset()
            action = np.asarray(policy.act(obs), dtype=float)
            policy.reset()
    except Exception as exc:  # user code: whatever it raises, say so at load, in one line
        raise ValueError(
            f"policy {reference!r} failed its test action on a dummy {task.name} observation (zeros for "
            f"{', '.join(keys) or 'no keys'}): {_one_line(exc)}"
        ) from None
    if action.shape != (ACTION_DIM,):
        raise ValueError(
            f"policy {reference!r}: act returned shape {action.shape} on a dummy {task.name} observation; expected "
            f"({ACTION_DIM},)"
        )
    return policy


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
