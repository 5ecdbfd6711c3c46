"""`python -m policies.ship run=runs/train/lift_bc_image name=lift_bc_image episodes=50`: package a checkpoint.

Copies the weights and config into policies/checkpoints/<name>/, measures nominal success on seeds 0..episodes-1
(the same seeds `policies.evaluate` uses) and writes the model card from what was measured.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py

from envs.cli import parse_config
from policies.checkpoint import CONFIG, WEIGHTS
from policies.evaluate import PolicyEvaluateConfig, evaluate
from policies.registry import CHECKPOINTS
from policies.scripted import PLANS
from policies.train import TrainConfig

CARD_TRAIN_KEYS = ("task", "arch", "epochs", "eval_every", "eval_episodes", "seed")
UNLEARNED_TRAIN_KEYS = ("out",)
"""Training arguments that do not change the weights, left out of the card's command."""


@dataclass
class ShipConfig:
    run: str = ""
    """Trained checkpoint directory (from policies.train)."""
    name: str = ""
    """Name under policies/checkpoints (what `policy=` takes)."""
    episodes: int = 50


def describe_architecture(model: dict, augment: list[str]) -> str:
    augmentation = " and ".join(
        {"crop": f"random {model['crop_size']}px crops", "colour": "colour jitter"}.get(name, name) for name in augment
    )
    encoder = (
        f"conv trunk {model['channels']} + spatial softmax ({model['keypoints']} keypoints), trained with "
        f"{augmentation or 'no augmentation'}, on the camera frame plus end-effector pose and gripper"
    )
    if model["arch"] == "bc_image":
        return f"{encoder}; MLP {model['hidden']}"
    if model["arch"] == "bc_rnn":
        return f"{encoder}; GRU ({model['rnn_hidden']}) over {model['window']}-step windows; MLP {model['hidden']}"
    if model["arch"] == "diffusion":
        return (
            f"{encoder}; an MLP denoiser over chunks of {model['chunk']} actions ({model['diffusion_steps']}-level "
            f"cosine DDPM schedule; {model['sampling_steps']} DDIM steps per chunk, the first {model['execute']} "
            "actions executed)"
        )
    return f"MLP {model['hidden']} on object state + proprioception (privileged state: sees no image)"


SENSITIVITY = {
    "lowdim": "It sees no image, so visual perturbations should leave it alone; physical ones need not.",
    "crop": "It was cloned from a scripted expert without visual augmentation beyond random crops, so colour, "
    "lighting and camera changes are expected to hurt it.",
    "colour": "Colour jitter (brightness, contrast, saturation, a hue shift of up to 0.08 turns) should let it "
    "survive lighting and mild colour changes; large colour changes, new viewpoints and physical changes need not.",
}


def wall_time(training: dict) -> str:
    seconds = training.get("wall_seconds")
    if seconds is None:
        return ""
    threads = training.get("threads")
    return f"; wall time {seconds / 60:.0f} min{f' on {threads} CPU threads' if threads else ''}, evaluations included"


def train_arguments(train_config: dict) -> str:
    """The `policies.train` arguments of a run: the usual ones, plus every other one it changed, so the card's
    command reproduces it."""
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    changed = [
        k
        for k, v in train_config.items()
        if k not in (*CARD_TRAIN_KEYS, *UNLEARNED_TRAIN_KEYS) and k in defaults and v != defaults[k]
    ]
    values = {k: train_config[k] for k in (*CARD_TRAIN_KEYS, *changed)}
    # Lists as the CLI takes them, quoted so that the shell does not read the brackets as a glob.
    return " ".join(
        f"'{k}=[{','.join(str(x) for x in v)}]'" if isinstance(v, list) else f"{k}={v}" for k, v in values.items()
    )


def model_card(name: str, config: dict, success: float, episodes: int, demos: str) -> str:
    training = config["training"]
    model = config["model"]
    train_args = train_arguments(training["config"])
    augment = list(training["config"].get("augment", ["crop"]))
    sensitivity = SENSITIVITY["lowdim" if model["arch"] == "bc_lowdim" else "colour" if "colour" in augment else "crop"]
    size = model["image_size"]
    best = f"{training['eval_seeds']}: {training['eval_success']} at epoch {training['epoch']}"
    return f"""# {name}

- **Task**: `{config["task"]}` (robosuite, Panda, OSC_POSE deltas + gripper, 20 Hz), camera agentview {size}×{size}.
- **Architecture**: `{model["arch"]}`: {describe_architecture(model, augment)}.
- **Data**: {demos}
- **Training**: `python -m policies.train {train_args}` ({training["train_samples"]} samples; best of the periodic
  rollout evaluations on seeds {best}{wall_time(training)}).
- **Measured nominal success**: **{success:.2f}** over {episodes} episodes, seeds 0..{episodes - 1}
  (`python -m policies.evaluate policy={name} episodes={episodes}`).
- **Format**: `{WEIGHTS}` (safetensors) + `{CONFIG}`; loading executes no code.
- **Intended use**: a policy under test for FailScope's failure search. {sensitivity}
"""


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ShipConfig, argv)
    run = Path(config.run)
    if not (run / CONFIG).is_file() or not config.name:
        raise SystemExit(f"error: need run=<dir with {CONFIG}> and name=<checkpoint name>")
    target = CHECKPOINTS / config.name
    target.mkdir(parents=True, exist_ok=True)
    for file in (WEIGHTS, CONFIG):
        shutil.copy2(run / file, target / file)
    episodes = evaluate(PolicyEvaluateConfig(policy=config.name, episodes=config.episodes))
    success = sum(e.success for e in episodes) / len(episodes)
    checkpoint_config = json.loads((target / CONFIG).read_text())
    data = checkpoint_config["training"]["data"]
    demos = data
    if Path(data).is_file():
        task = checkpoint_config["task"]
        round_object = task in PLANS and PLANS[task].yaw_symmetry is None
        grasps = "grasps at a fixed yaw (round object)" if round_object else "yaw-jittered grasps"
        with h5py.File(data, "r") as file:
            demos = (
                f"{len(file['data'])} scripted-expert demonstrations (`python -m policies.collect "
                f"task={task} episodes={len(file['data'])}`: DART action noise, {grasps})"
            )
    checkpoint_config["measured"] = {
        "nominal_success": success,
        "episodes": len(episodes),
        "seeds": [0, len(episodes) - 1],
    }
    (target / CONFIG).write_text(json.dumps(checkpoint_config, indent=2))
    (target / "MODEL_CARD.md").write_text(model_card(config.name, checkpoint_config, success, len(episodes), demos))
    print(f"{target}: nominal success {success:.3f} over {len(episodes)} episodes")
    print(f"success_rate: {success:.3f}")


if __name__ == "__main__":
    main()
