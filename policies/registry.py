"""Policies by name or path: `policy=...` on every CLI.

- `scripted`: the task's scripted expert (privileged state);
- a shipped checkpoint name (a folder of policies/checkpoints, e.g. `lift_bc_image`);
- a path: a FailScope checkpoint folder, a TorchScript file (`.pt`/`.ts` with a `.json` obs spec beside it),
  a robomimic checkpoint (`.pth`), or `module:attribute` naming a Python callable or Policy factory.
"""

from __future__ import annotations

from pathlib import Path

from envs.choices import did_you_mean
from envs.tasks import TaskSpec, get_task
from policies.base import Policy
from policies.scripted import ScriptedExpert

CHECKPOINTS = Path(__file__).parent / "checkpoints"


def shipped_checkpoints() -> dict[str, Path]:
    return {p.name: p for p in sorted(CHECKPOINTS.glob("*")) if (p / "config.json").is_file()}


def policy_names() -> list[str]:
    return ["scripted", *shipped_checkpoints()]


def default_policy(task: str | TaskSpec) -> str:
    """The policy a diagnosis runs on when none is named: the task's shipped image policy."""
    name = f"{get_task(task).name}_bc_image"
    if name not in shipped_checkpoints():
        raise ValueError(
            f"task {get_task(task).name!r} has no shipped policy; name one (shipped: {', '.join(policy_names())}, "
            "or a checkpoint path)"
        )
    return name


def load_policy(name: str, task: str | TaskSpec | None = None) -> tuple[Policy, TaskSpec]:
    """Builds a policy and says which task it is for; a task that contradicts the policy's is an error."""
    from policies.adapters import load_adapter
    from policies.learned import BCPolicy

    wanted = get_task(task) if task else None
    if name == "scripted":
        spec = wanted or get_task("lift")
        return ScriptedExpert(spec), spec
    shipped = shipped_checkpoints()
    if name in shipped or Path(name).is_dir():
        policy = BCPolicy.load(shipped.get(name, name))
    elif Path(name).suffix in (".pt", ".ts", ".pth") or ":" in name:
        policy = load_adapter(name, wanted)
    else:
        raise ValueError(
            f"unknown policy {name!r}; valid policies: {', '.join(policy_names())}, or a checkpoint path"
            f"{did_you_mean(name, policy_names())}"
        )
    spec = policy.task
    if wanted is not None and wanted.name != spec.name:
        raise ValueError(f"policy {name!r} was trained for task {spec.name!r}, not {wanted.name!r}")
    return policy, spec
