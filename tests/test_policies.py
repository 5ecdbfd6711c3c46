import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from envs.hdf5 import demo_names
from policies.checkpoint import load_checkpoint
from policies.collect import CollectConfig, collect
from policies.evaluate import PolicyEvaluateConfig, evaluate
from policies.registry import load_policy
from policies.train import TrainConfig, Trainer, selection_score


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    collect(CollectConfig(task="lift", episodes=3, out=str(path), valid_fraction=0.34, workers=0))
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
    collect(CollectConfig(task="lift", episodes=4, out=str(demos), workers=1))  # the rest from a worker process
    with h5py.File(demos, "r") as file:
        assert demo_names(file)[-1] == "demo_3"
        assert file["data/demo_3"].attrs["seed"] >= next_seed
        assert file["data"].attrs["next_seed"] == file["data/demo_3"].attrs["seed"] + 1


# One architecture in the default run; the others share the whole path but the model (slow).
@pytest.mark.parametrize(
    "arch", ["bc_image", *(pytest.param(arch, marks=pytest.mark.slow) for arch in ("bc_rnn", "bc_lowdim", "diffusion"))]
)
def test_train_evaluate_and_fine_tune_round_trip(demos, tmp_path, arch):
    out = tmp_path / arch
    Trainer(
        TrainConfig(task="lift", arch=arch, data=str(demos), out=str(out), epochs=1, eval_every=1, eval_episodes=1)
    ).run()
    assert (out / "model.safetensors").is_file() and (out / "tensorboard").is_dir()
    policy, task = load_policy(str(out))
    assert task.name == "lift"
    # In process: tests/test_cli.py runs policies.evaluate as a command.
    (episode,) = evaluate(PolicyEvaluateConfig(policy=str(out), episodes=1))
    assert episode.length > 0 and episode.outcome in ("success", "failure")
    tuned = tmp_path / f"{arch}_tuned"  # what diagnosis.improve does to a user's checkpoint of this architecture
    Trainer(
        TrainConfig(task="lift", arch=arch, data=str(demos), init=str(out), out=str(tuned), epochs=1, eval_every=0)
    ).run()
    assert load_policy(str(tuned))[1].name == "lift"
    assert json.loads((tuned / "config.json").read_text())["training"]["config"]["init"] == str(out)


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
    path.with_suffix(".json").write_text(
        json.dumps({"task": "lift", "obs_keys": ["agentview_image", "robot0_eef_pos"]})
    )
    policy, task = load_policy(str(path))
    obs = {"agentview_image": np.zeros((84, 84, 3), np.uint8), "robot0_eef_pos": np.zeros(3)}
    assert policy.act(obs).shape == (7,) and task.name == "lift"


@pytest.mark.parametrize(
    ("name", "least_success"), [("lift_bc_image", 0.85), ("lift_bc_lowdim", 0.85), ("lift_bc_colour", 0.8)]
)
def test_shipped_checkpoints_load_and_act(name, least_success):
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
    assert measured["episodes"] == 50 and measured["nominal_success"] >= least_success


@pytest.mark.parametrize(
    ("name", "least_success"), [("can_bc_image", 0.85), ("can_bc_colour", 0.9), ("stack_bc_image", 0.7)]
)
def test_shipped_can_and_stack_policies_read_the_camera_and_act(name, least_success):
    """A can or stack episode runs up to 400 steps, so a few actions on real observations stand in for a rollout."""
    from envs.rollout import get_runner
    from policies.learned import PROPRIO_KEYS
    from policies.registry import CHECKPOINTS

    assert (CHECKPOINTS / name / "MODEL_CARD.md").is_file()
    assert (CHECKPOINTS / name / "model.safetensors").stat().st_size < 10 * 2**20
    policy, task = load_policy(name)
    assert task.name == name.split("_")[0] and policy.obs_keys == (*PROPRIO_KEYS, "agentview_image")
    episode = get_runner(task.name).episode([], seed=0, render_frames=True)
    obs = episode.start()
    policy.reset()
    for _ in range(3):
        action = policy.act(obs)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
        blind = policy.act({**obs, "agentview_image": np.zeros_like(obs["agentview_image"])})
        assert not np.allclose(action, blind), "the action ignores the camera image"
        obs, _ = episode.step(action)
    measured = json.loads((CHECKPOINTS / name / "config.json").read_text())["measured"]
    assert measured["episodes"] == 50 and measured["nominal_success"] >= least_success


# -- a bad policy fails at load, in one line --------------------------------------------------------------------


def test_checkpoint_whose_weights_do_not_match_its_config_names_the_tensors(tmp_path):
    import shutil

    from policies.registry import CHECKPOINTS

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINTS / "lift_bc_lowdim", checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["hidden"] = [128, 256]  # retrained narrower, say, but the old weights kept
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as error:
        load_policy(str(checkpoint))
    assert str(error.value) == (
        f"checkpoint {checkpoint}: model.safetensors does not match the model in config.json (3 with the wrong shape "
        "(weights vs config): head.0.weight [256, 19] vs [128, 19], head.0.bias [256] vs [128], head.2.weight "
        "[256, 256] vs [256, 128]); the two files come from different trainings: restore the pair, or retrain "
        "(python -m policies.train)"
    )
    config["model"]["hidden"], config["model"]["nope"] = [256, 256], 1
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: bad model or normalization entry \(.*'nope'"):
        load_policy(str(checkpoint))


def wrong_length_action(obs):
    return np.zeros(3)


class NoAct:
    obs_keys, action_dim = ("robot0_eef_pos",), 7

    def __init__(self, task):
        self.task = task

    def reset(self):
        pass


@pytest.mark.parametrize(
    "spec, message",
    [
        ("os:path", "policy 'os:path' is a module, not a policy: name a Policy class"),
        ("os:sep", "policy 'os:sep' is a str, not a policy"),
        (
            "os.path:join",
            "policy 'os.path:join' failed its test action on a dummy lift observation (zeros for "
            "agentview_image): TypeError: expected str, bytes or os.PathLike object, not dict",
        ),
        ("test_policies:wrong_length_action", "act returned shape (3,) on a dummy lift observation; expected (7,)"),
        ("test_policies:NoAct", "(NoAct) lacks act; a policy has obs_keys, action_dim, reset() and act(obs)"),
        ("no_such_module:x", "cannot import 'no_such_module:x'"),
    ],
)
def test_a_callable_spec_that_is_not_a_policy_fails_at_load(spec, message):
    with pytest.raises(ValueError) as error:
        load_policy(spec, "lift")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_real_callable_policy_passes_the_load_check():
    from envs.tasks import get_task
    from policies.adapters import dummy_observation, obs_shape

    policy, task = load_policy("fake_policies:BlueAverse", "lift")
    assert task.name == "lift" and policy.phase == "approach"  # reset after the test action
    obs = dummy_observation(get_task("stack"), ("object-state", "cubeA_to_cubeB", "robot0_proprio-state"))
    assert {k: v.shape for k, v in obs.items()} == {
        "object-state": (23,),
        "cubeA_to_cubeB": (3,),
        "robot0_proprio-state": (50,),
    }
    assert obs_shape(get_task("lift"), "agentview_image") == (84, 84, 3) and obs_shape(task, "depth") is None


# -- a policy that rarely succeeds: the monitor's nominal collection gives up early -----------------------------


def test_nominal_collection_gives_up_early_on_a_failing_policy():
    from monitor.build import collect_successes

    seeds = []

    def always_fails(seed):
        seeds.append(seed)
        return None

    with pytest.raises(ValueError) as error:
        collect_successes(always_fails, episodes=40, seed=100, max_attempts=80, policy="'fake' on lift")
    assert str(error.value) == (
        "policy 'fake' on lift succeeded in 0 of 9 nominal attempts (0%); the monitor needs 40 successful nominal "
        "rollouts, which at that rate it will not get within 80 attempts: run without a monitor (monitor=none), use a "
        "better policy, or lower monitor.episodes"
    )
    assert seeds == list(range(100, 109))
    frames = collect_successes(lambda s: None if s % 10 == 0 else np.zeros(1), 40, 0, 80)  # 90%: no early stop
    assert len(frames) == 40


@pytest.mark.parametrize(
    "successes, attempts, hopeless_",
    [
        (0, 4, False),  # too few attempts to judge the rate
        (0, 9, True),
        (0, 8, False),  # an always-failing policy: given up on after 9 of 80
        (2, 20, True),
        (10, 20, False),  # 10%: hopeless; 50%: still possible
        (35, 41, False),
        (30, 71, True),  # the cap: 10 still needed in 9 left
        (39, 79, False),
        (40, 80, False),
    ],
)
def test_hopeless_rule(successes, attempts, hopeless_):
    from monitor.stopping import hopeless

    assert hopeless(successes, attempts, 40, 80) is hopeless_


def test_nominal_collection_redraws_its_bar_once_per_kept_episode(capsys):
    from monitor.build import collect_successes

    collect_successes(lambda s: None if s % 2 else np.zeros(1), episodes=6, seed=0, max_attempts=12)
    # tqdm redraws with a carriage return: the first draw, one per kept episode, and the final one at close.
    assert capsys.readouterr().err.count("\r") <= 6 + 2


def test_model_card_command_reproduces_the_training_config():
    import shlex
    from dataclasses import asdict

    from envs.cli import parse_config
    from policies.ship import UNLEARNED_TRAIN_KEYS, train_arguments

    stored = TrainConfig(task="can", epochs=7, channels=(16, 32, 64), augment=("crop", "colour"))
    config = json.loads(json.dumps(asdict(stored)))  # as the checkpoint's config.json holds it
    command = train_arguments(config)
    assert "'augment=[crop,colour]'" in command  # quoted: brackets are a glob to the shell
    parsed = json.loads(json.dumps(asdict(parse_config(TrainConfig, shlex.split(command)))))
    assert {k: v for k, v in parsed.items() if k not in UNLEARNED_TRAIN_KEYS} == {
        k: v for k, v in config.items() if k not in UNLEARNED_TRAIN_KEYS
    }


def test_a_policy_step_runs_on_one_torch_thread_and_leaves_the_process_count_alone(monkeypatch):
    from policies.threads import step_threads

    original = torch.get_num_threads()
    torch.set_num_threads(2)  # as a training process has it (other test modules pin 1)
    try:
        policy, _ = load_policy("lift_bc_image")
        seen = []
        forward = policy.model.forward
        monkeypatch.setattr(policy.model, "forward", lambda *a: seen.append(torch.get_num_threads()) or forward(*a))
        policy.act({k: np.zeros(s, np.uint8 if k.endswith("image") else np.float32) for k, s in OBS_SHAPES.items()})
        assert seen == [1] and torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), step_threads(1):
            raise RuntimeError("a failing step")
        assert torch.get_num_threads() == 2  # restored on errors too
    finally:
        torch.set_num_threads(original)


OBS_SHAPES = {
    "agentview_image": (84, 84, 3),
    "robot0_eef_pos": (3,),
    "robot0_eef_quat": (4,),
    "robot0_gripper_qpos": (2,),
}


def test_fine_tuning_starts_from_the_checkpoint_and_reads_several_files(demos, tmp_path):
    base = tmp_path / "base"
    Trainer(TrainConfig(task="lift", arch="bc_lowdim", data=str(demos), out=str(base), epochs=1, eval_every=0)).run()
    start = load_checkpoint(base)
    tuned = Trainer(
        TrainConfig(task="lift", arch="bc_lowdim", data=f"{demos},{demos}", init=str(base), out=str(tmp_path / "t"))
    )
    assert tuned.norm == start.normalization and tuned.model_config == start.model_config
    assert all(torch.equal(value, start.state_dict[key]) for key, value in tuned.model.state_dict().items())
    n = len(tuned.train.actions) // 2  # the same file twice: the second copy's episodes start n samples later
    assert np.array_equal(tuned.train.actions[n:], tuned.train.actions[:n])
    assert np.array_equal(tuned.train.starts[n:], tuned.train.starts[:n] + n)
    with pytest.raises(ValueError, match="is a bc_lowdim policy; pass arch=bc_lowdim"):
        Trainer(TrainConfig(task="lift", arch="bc_image", data=str(demos), init=str(base)))


def test_rollout_evaluations_on_named_modes_choose_half_nominal_half_modes(demos, tmp_path):
    """eval_modes: every condition runs on the same seeds, the history keeps each rate, the kept checkpoint's
    score weighs nominal as much as all the modes together, and a misspelt mode fails before training."""
    assert selection_score({"nominal": 0.8}) == 0.8
    assert selection_score({"nominal": 1.0, "a": 0.0, "b": 0.5}) == pytest.approx(0.625)
    out = tmp_path / "evaluated"
    config = TrainConfig(
        task="lift", arch="bc_lowdim", data=str(demos), out=str(out), epochs=1, eval_every=1, eval_episodes=1
    )
    Trainer(replace(config, eval_modes="light_dim,table_color_blue+cube_color_green")).run()
    (record,) = json.loads((out / "history.json").read_text())
    assert list(record["eval_rates"]) == ["nominal", "light_dim", "table_color_blue+cube_color_green"]
    assert record["eval_success"] == selection_score(record["eval_rates"])
    assert load_checkpoint(out).training["eval_rates"] == record["eval_rates"]
    with pytest.raises(ValueError, match="unknown perturbation.*light_dimm.*valid: "):
        Trainer(replace(config, eval_modes="light_dimm"))


def test_shipped_can_lowdim_policy_reads_the_object_state_and_acts():
    from envs.rollout import get_runner
    from policies.learned import PROPRIO_KEYS, STATE_KEY
    from policies.registry import CHECKPOINTS

    policy, task = load_policy("can_bc_lowdim")
    assert task.name == "can" and policy.obs_keys == (*PROPRIO_KEYS, STATE_KEY)
    assert (CHECKPOINTS / "can_bc_lowdim" / "MODEL_CARD.md").is_file()
    episode = get_runner("can").episode([], seed=0, render_frames=False)
    obs = episode.start()
    policy.reset()
    for _ in range(3):
        action = policy.act(obs)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
        obs, _ = episode.step(action)
    measured = json.loads((CHECKPOINTS / "can_bc_lowdim" / "config.json").read_text())["measured"]
    assert measured["episodes"] == 50 and measured["nominal_success"] >= 0.9
