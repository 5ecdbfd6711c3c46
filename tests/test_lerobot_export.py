"""envs.lerobot_export: the LeRobot v3.0 layout from a FailScope file, read back with pyarrow (default suite) and
with LeRobot's own reader (`lerobot-dataset` cannot live beside this project's pins, so it runs in an environment
of its own, made by uv, that borrows this one's torch; skipped where uv cannot fetch it)."""

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_hdf5 import episode

from envs.hdf5 import EpisodeWriter
from envs.lerobot_export import export, main
from envs.tasks import get_task

LENGTHS = (5, 4)


@pytest.fixture
def search_file(tmp_path):
    path = tmp_path / "failures.hdf5"
    with EpisodeWriter(path, "lift", "<mujoco/>") as writer:
        for i, length in enumerate(LENGTHS):
            attrs = {"failed": i == 1, "sim_failure": i == 1, "search_step": i + 1}
            writer.write(episode(length=length, seed=i, success=i == 0), attrs=attrs)
    return path


def test_the_layout_holds_every_step_once_with_frames_pixel_exact(search_file, tmp_path):
    out = tmp_path / "lerobot"
    info = export(search_file, out)
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["total_frames"] == sum(LENGTHS)
    assert info["fps"] == 20 and info["features"]["observation.image"]["shape"] == [84, 84, 3]
    assert info["features"]["observation.state"]["shape"] == [13]  # object-state (10) + robot0_eef_pos (3)
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert set(data.column_names) == set(info["features"])  # an undeclared column would make the reader fail
    assert pq.ParquetFile(out / "data/chunk-000/file-000.parquet").num_row_groups == 2  # one per rollout
    assert data["index"].to_pylist() == list(range(sum(LENGTHS)))
    assert data["episode_index"].to_pylist() == [0] * 5 + [1] * 4
    assert data["timestamp"].to_pylist()[:2] == [0.0, pytest.approx(0.05)]
    first = Image.open(io.BytesIO(data["observation.image"][5].as_py()["bytes"]))
    np.testing.assert_array_equal(np.asarray(first), episode(length=4, seed=1).frames[0])
    np.testing.assert_allclose(data["action"][5].as_py(), episode(length=4, seed=1).actions[0], rtol=1e-6)
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"], e["success"], e["failed"]) for e in episodes] == [
        (0, 5, True, False),
        (5, 9, False, True),
    ]
    assert episodes[0]["perturbations"] == ["cube_color_red"] and episodes[1]["source_demo"] == "demo_1"
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.asarray(stats["observation.image"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [sum(LENGTHS)] and len(stats["action"]["q99"]) == 7


def test_the_cli_refuses_a_folder_in_use_and_a_file_without_frames(search_file, tmp_path, capsys):
    out = tmp_path / "lerobot"
    main([f"data={search_file}", f"out={out}"])
    assert "2 episodes, 9 frames at 20 fps" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists and is not empty; choose a new out= folder"):
        main([f"data={search_file}", f"out={out}"])
    frameless = tmp_path / "demos.hdf5"
    with EpisodeWriter(frameless, "lift", "<mujoco/>") as writer:
        writer.write(dataclasses.replace(episode(), frames=None))
    with pytest.raises(SystemExit, match="demo_0 has no agentview_image frames"):
        main([f"data={frameless}", f"out={tmp_path / 'other'}"])


READER = """
import os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.append(sys.argv[2])  # torch from the project's environment, after the reader's own packages
from ledataset.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset(repo_id="local/failures", root=sys.argv[1], delta_timestamps={"action": [0.0, 0.05, 0.1]})
item = ds[3]
fields = [len(ds), ds.num_episodes, item["task"], tuple(item["observation.image"].shape),
          round(float(item["observation.image"][0, 0, 0]) * 255), item["action_is_pad"].tolist(),
          bool(ds.meta.episodes[1]["failed"])]
print("|".join(map(str, fields)))
"""


@pytest.mark.slow  # imports LeRobot's reader; the layout test checks every step and frame
def test_lerobots_own_reader_loads_the_export_offline(search_file, tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build the reader's own environment")
    out = tmp_path / "lerobot"
    export(search_file, out)
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HOME": str(tmp_path / "hf")}
    command = [uv, "run", "--no-project", "--python", "3.11", "--with", "lerobot-dataset==0.4.4", "python", "-c"]
    # The reader's wheel ships without torch: it borrows this environment's.
    purelib = sysconfig.get_paths()["purelib"]
    installed = subprocess.run([*command, "import ledataset"], capture_output=True, text=True, env=env, timeout=900)
    if installed.returncode != 0:
        pytest.skip(f"lerobot-dataset cannot be installed here: {installed.stderr.strip().splitlines()[-1:]}")
    result = subprocess.run([*command, READER, str(out), purelib], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    length, episodes, task, shape, pixel, padded, failed = result.stdout.strip().splitlines()[-1].split("|")
    assert (length, episodes, shape) == ("9", "2", "(3, 84, 84)") and task == get_task("lift").instruction
    assert int(pixel) == int(episode(length=5, seed=0).frames[3, 0, 0, 0])  # pixel exact through PNG
    assert padded == "[False, False, True]" and failed == "True"  # action chunks stop at the episode's end
    assert Path(out / "meta/info.json").is_file()
