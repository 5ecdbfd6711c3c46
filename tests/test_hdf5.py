"""envs.hdf5 on hand-made episodes: the layout robomimic reads, and what a killed or interrupted writer leaves."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from diagnosis.dataset import read_rollouts
from envs.hdf5 import STAGING, EpisodeWriter, deferred_interrupt, demo_names, is_complete, iter_demos
from envs.rollout import Episode

LOW_DIM = ("robot0_eef_pos", "object-state")


def episode(length: int = 6, seed: int = 0, success: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        task="lift",
        seed=seed,
        perturbations=("cube_color_red",),
        outcome="success" if success else "failure",
        length=length,
        failure_step=None,
        actions=rng.uniform(-1, 1, (length, 7)),
        states=rng.normal(size=(length, 9)),
        observations={"robot0_eef_pos": rng.normal(size=(length, 3)), "object-state": rng.normal(size=(length, 10))},
        frames=rng.integers(0, 256, (length, 84, 84, 3), np.uint8),
    )


def write(path: Path, count: int, **attrs) -> None:
    with EpisodeWriter(path, "lift", "<mujoco/>") as writer:
        for i in range(count):
            writer.write(episode(seed=i), attrs=attrs)


def half_write(path: Path, name: str, keys=("actions", "states")) -> None:
    """What a run killed mid-write leaves in a file from before the `complete` marker: attributes, some datasets."""
    with h5py.File(path, "a") as file:
        group = file["data"].create_group(name)
        group.attrs.update(num_samples=6, seed=99, outcome="success", perturbations="[]")
        for key in keys:
            group.create_dataset(key, data=np.zeros((6, 7)))


def test_writer_stores_robomimic_layout_with_next_obs(tmp_path):
    path = tmp_path / "demos.hdf5"
    write(path, 2)
    with h5py.File(path, "r") as file:
        assert demo_names(file) == ["demo_0", "demo_1"] and STAGING not in file
        demo = file["data/demo_1"]
        assert demo.attrs["complete"] and demo.attrs["num_samples"] == 6
        assert int(file["data"].attrs["total"]) == 12
        for key in (*LOW_DIM, "agentview_image"):
            obs, following = demo[f"obs/{key}"][:], demo[f"next_obs/{key}"][:]
            np.testing.assert_array_equal(following[:-1], obs[1:])
            np.testing.assert_array_equal(following[-1], obs[-1])
        for prefix in ("obs", "next_obs"):
            assert demo[f"{prefix}/agentview_image"].compression == "gzip"
            assert demo[f"{prefix}/agentview_image"].dtype == np.uint8


def test_robomimic_sequence_dataset_reads_our_files(tmp_path):
    pytest.importorskip("robomimic")
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    path = tmp_path / "demos.hdf5"
    with EpisodeWriter(path, "lift", "<mujoco/>") as writer:
        for i in range(3):
            writer.write(episode(length=5 + i, seed=i))
        writer.write_split(valid_fraction=0.34)
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": list(LOW_DIM), "rgb": ["agentview_image"]}})
    dataset = SequenceDataset(
        hdf5_path=str(path),
        obs_keys=(*LOW_DIM, "agentview_image"),
        dataset_keys=("actions", "rewards", "dones"),
        load_next_obs=True,
        filter_by_attribute="train",
    )
    assert len(dataset) == sum(5 + int(n.split("_")[1]) for n in dataset.demos) and len(dataset.demos) == 2
    with h5py.File(path, "r", swmr=True, libver="latest") as file:  # robomimic holds it open so, per item
        actions = file[f"data/{dataset.demos[0]}/actions"][:]
        obs = {key: value[:] for key, value in file[f"data/{dataset.demos[0]}/obs"].items()}
    last = len(actions) - 1
    for index, step, following in ((0, 0, 1), (last, last, last)):
        item = dataset[index]
        np.testing.assert_allclose(item["obs"]["robot0_eef_pos"][0], obs["robot0_eef_pos"][step], rtol=1e-6)
        np.testing.assert_allclose(item["next_obs"]["object-state"][0], obs["object-state"][following], rtol=1e-6)
        np.testing.assert_array_equal(item["next_obs"]["agentview_image"][0], obs["agentview_image"][following])
        np.testing.assert_allclose(item["actions"][0], actions[step], rtol=1e-6)
    assert dataset[last]["dones"][0] == 1 and dataset[last]["rewards"][0] == 1.0


def test_readers_skip_a_half_written_demo_and_a_resumed_writer_rewrites_it(tmp_path):
    path = tmp_path / "failures.hdf5"
    attrs = {"failed": False, "sim_failure": False, "search_step": 0, "depth": 1, "monitor": "null"}
    write(path, 2, **attrs)
    half_write(path, "demo_2")
    with h5py.File(path, "a") as file:  # and the staging group of a run killed before its move into data/
        file.create_group(STAGING).create_dataset("actions", data=np.zeros((6, 7)))
        assert demo_names(file) == ["demo_0", "demo_1"] and not is_complete(file["data/demo_2"])
    assert [name for name, _ in iter_demos(path)] == ["demo_0", "demo_1"]
    assert [row["demo"] for row in read_rollouts(path)] == ["demo_0", "demo_1"]
    with EpisodeWriter(path, "lift", "<mujoco/>") as writer:
        assert writer.discarded == ["demo_2"] and len(writer) == 2
        assert writer.write(episode(seed=7), attrs=attrs) == "demo_2"
    with h5py.File(path, "r") as file:
        assert demo_names(file) == ["demo_0", "demo_1", "demo_2"] and STAGING not in file
        assert file["data/demo_2"].attrs["seed"] == 7 and "obs" in file["data/demo_2"]
        assert int(file["data"].attrs["total"]) == 18


def test_files_from_before_the_marker_still_read(tmp_path):
    path = tmp_path / "legacy.hdf5"
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        for i in range(3):
            group = data.create_group(f"demo_{i}")
            group.attrs["num_samples"] = 2
            for key in ("actions", "states", "rewards", "dones"):
                group.create_dataset(key, data=np.zeros(2))
        data.create_group("demo_3").create_dataset("obs/agentview_image", data=np.zeros((2, 84, 84, 3), np.uint8))
        data.create_group("demo_4")  # killed right after creating the group
        for key in ("actions", "rewards", "dones"):  # killed between two standard datasets
            data.create_dataset(f"demo_5/{key}", data=np.zeros(2))
        file.create_dataset("mask/train", data=np.array([b"demo_0", b"demo_2", b"demo_5"]))
    with h5py.File(path, "r") as file:
        assert demo_names(file) == ["demo_0", "demo_1", "demo_2", "demo_3"]  # demo_3: hand-made, labels only
        assert demo_names(file, "train") == ["demo_0", "demo_2"]
        with pytest.raises(ValueError, match="no split 'valid'"):
            demo_names(file, "valid")


@pytest.fixture
def ctrl_c():
    """Python's own Ctrl-C handler for the test: a runner started in the background inherits SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_during_a_write_arrives_after_it(tmp_path, ctrl_c):
    class Interrupting(dict):
        """Extras whose reading sends this process Ctrl-C, as if pressed mid-write."""

        def items(self):
            os.kill(os.getpid(), signal.SIGINT)
            return super().items()

    path = tmp_path / "demos.hdf5"
    with EpisodeWriter(path, "lift", "<mujoco/>") as writer:
        with pytest.raises(KeyboardInterrupt):
            writer.write(episode(), extras=Interrupting(anomaly=np.zeros(6, np.uint8)))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with h5py.File(path, "r") as file:
        assert demo_names(file) == ["demo_0"] and file["data/demo_0/anomaly"].shape == (6,)


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "demos.hdf5"
    with EpisodeWriter(path, "lift", "<mujoco/>") as writer:
        writer.write(episode())
        with pytest.raises(TypeError):
            writer.write(episode(), extras={"bad": np.array([object()] * 6)})
        assert len(writer) == 1 and STAGING not in writer.file
        assert writer.write(episode(seed=1)) == "demo_1"


def test_deferred_interrupt_nests_and_is_a_no_op_off_the_main_thread(ctrl_c):
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            with deferred_interrupt():
                os.kill(os.getpid(), signal.SIGINT)
            reached = True  # the inner block hands the interrupt to the outer one
    assert reached
    errors = []

    def enter() -> None:
        try:
            with deferred_interrupt():
                pass
        except Exception as exc:  # signal.signal refuses outside the main thread
            errors.append(exc)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert errors == []


KILLED_WRITER = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
from test_hdf5 import episode
from envs.hdf5 import EpisodeWriter

class Dying(dict):
    def items(self):
        os.kill(os.getpid(), signal.SIGKILL)

with EpisodeWriter({path!r}, "lift", "<mujoco/>") as writer:
    writer.write(episode(seed=0))
    writer.write(episode(seed=1), extras=Dying(label=[0] * 6))
"""


def test_a_killed_writer_leaves_no_demo_that_reads_complete(tmp_path):
    path = tmp_path / "demos.hdf5"
    tests = Path(__file__).parent
    script = KILLED_WRITER.format(root=str(tests.parent), tests=str(tests), path=str(path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    with h5py.File(path, "r") as file:
        assert demo_names(file) == ["demo_0"]
    with EpisodeWriter(path, "lift", "<mujoco/>") as writer:
        assert len(writer) == 1 and writer.write(episode(seed=1)) == "demo_1"
    with h5py.File(path, "r") as file:
        assert demo_names(file) == ["demo_0", "demo_1"] and STAGING not in file
        assert json.loads(file["data/demo_1"].attrs["perturbations"]) == ["cube_color_red"]
