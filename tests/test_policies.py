import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from envs.hdf5 import demo_names
from policies.collect import CollectConfig, collect
from policies.registry import load_policy
from policies.train import TrainConfig, Trainer


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    collect(CollectConfig(task="lift", episodes=3, out=str(path), valid_fraction=0.34))
    return path


def test_collect_writes_robomimic_layout_and_resumes(demos):
    with h5py.File(demos, "r") as file:
        assert demo_names(file) == ["demo_0", "demo_1", "demo_2"]
        demo = file["data/demo_0"]
        n = demo.attrs["num_samples"]
        assert demo["obs/agentview_image"].shape == (n, 84, 84, 3) and demo["obs/agentview_image"].dtype == np.uint8
        assert demo["actions"].shape == (n, 7) and demo["states"].shape[0] == n
        assert "<mujoco" in demo.attrs["model_file"]
        assert json.loads(file["data"].attrs["env_args"])["env_name"] == "Lift"
        assert len(file["mask/train"]) + len(file["mask/valid"]) == 3
        next_seed = file["data"].attrs["next_seed"]
    collect(CollectConfig(task="lift", episodes=4, out=str(demos)))
    with h5py.File(demos, "r") as file:
        assert demo_names(file)[-1] == "demo_3"
        assert file["data/demo_3"].attrs["seed"] >= next_seed


# One architecture in the default run; the others share the whole path but the model (slow).
@pytest.mark.parametrize(
    "arch", ["bc_image", pytest.param("bc_rnn", marks=pytest.mark.slow), pytest.param("bc_lowdim", marks=pytest.mark.slow)]
)
def test_train_then_evaluate_round_trip(demos, tmp_path, arch):
    out = tmp_path / arch
    Trainer(TrainConfig(task="lift", arch=arch, data=str(demos), out=str(out), epochs=1, eval_every=1, eval_episodes=1)).run()
    assert (out / "model.safetensors").is_file() and (out / "tensorboard").is_dir()
    policy, task = load_policy(str(out))
    assert task.name == "lift"
    result = run_module("policies.evaluate", f"policy={out}", "episodes=1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("success_rate: ")


def test_checkpoint_errors_name_the_file(tmp_path, demos):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_policy(str(tmp_path))
    out = tmp_path / "ckpt"
    Trainer(TrainConfig(task="lift", arch="bc_lowdim", data=str(demos), out=str(out), epochs=1, eval_every=0)).run()
    (out / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        load_policy(str(out))
    with pytest.raises(ValueError, match="valid policies: scripted"):
        load_policy("no_such_policy")


def test_task_mismatch_is_an_error(tmp_path, demos):
    out = tmp_path / "ckpt"
    Trainer(TrainConfig(task="lift", arch="bc_lowdim", data=str(demos), out=str(out), epochs=1, eval_every=0)).run()
    with pytest.raises(ValueError, match="trained for task 'lift', not 'can'"):
        load_policy(str(out), "can")


def test_empty_or_all_failure_demo_file_fails_before_training(tmp_path):
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as file:
        file.create_group("data")
    with pytest.raises(ValueError, match="holds no demonstrations"):
        Trainer(TrainConfig(data=str(empty)))
    failed = tmp_path / "failed.hdf5"
    with h5py.File(failed, "w") as file:
        file.create_group("data/demo_0").attrs["outcome"] = "failure"
    with pytest.raises(ValueError, match="only failed episodes"):
        Trainer(TrainConfig(data=str(failed)))


class TinyScripted(torch.nn.Module):
    def forward(self, image: torch.Tensor, eef: torch.Tensor) -> torch.Tensor:
        return torch.zeros(image.shape[0], 7) + eef[:, :1] * 0


def test_torchscript_adapter(tmp_path):
    path = tmp_path / "policy.pt"
    torch.jit.script(TinyScripted()).save(str(path))
    with pytest.raises(FileNotFoundError, match="policy.json is missing"):
        load_policy(str(path))
    path.with_suffix(".json").write_text(json.dumps({"task": "lift", "obs_keys": ["agentview_image", "robot0_eef_pos"]}))
    policy, task = load_policy(str(path))
    obs = {"agentview_image": np.zeros((84, 84, 3), np.uint8), "robot0_eef_pos": np.zeros(3)}
    assert policy.act(obs).shape == (7,) and task.name == "lift"


@pytest.mark.parametrize("name", ["lift_bc_image", "lift_bc_lowdim"])
def test_shipped_checkpoints_load_and_act(name):
    from envs.rollout import rollout
    from policies.registry import CHECKPOINTS, policy_names

    assert name in policy_names()
    assert (CHECKPOINTS / name / "MODEL_CARD.md").is_file()
    assert (CHECKPOINTS / name / "model.safetensors").stat().st_size < 10 * 2**20
    policy, task = load_policy(name)
    assert task.name == "lift"
    episode = rollout(task, policy, seed=0)
    assert episode.length > 0 and np.all(np.abs(episode.actions) <= 1.0)
    measured = json.loads((CHECKPOINTS / name / "config.json").read_text())["measured"]
    assert measured["episodes"] == 50 and measured["nominal_success"] >= 0.85


def test_shipped_can_policy_reads_the_camera_and_acts():
    """A can episode runs up to 400 steps, so a few actions on real observations stand in for a rollout."""
    from envs.rollout import get_runner
    from policies.learned import PROPRIO_KEYS
    from policies.registry import CHECKPOINTS

    name = "can_bc_image"
    assert (CHECKPOINTS / name / "MODEL_CARD.md").is_file()
    assert (CHECKPOINTS / name / "model.safetensors").stat().st_size < 10 * 2**20
    policy, task = load_policy(name)
    assert task.name == "can" and policy.obs_keys == (*PROPRIO_KEYS, "agentview_image")
    episode = get_runner("can").episode([], seed=0, render_frames=True)
    obs = episode.start()
    policy.reset()
    for _ in range(3):
        action = policy.act(obs)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
        blind = policy.act({**obs, "agentview_image": np.zeros_like(obs["agentview_image"])})
        assert not np.allclose(action, blind), "the action ignores the camera image"
        obs, _ = episode.step(action)
    measured = json.loads((CHECKPOINTS / name / "config.json").read_text())["measured"]
    assert measured["episodes"] == 50 and measured["nominal_success"] >= 0.70
