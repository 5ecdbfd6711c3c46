import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_embeddings import (
    FAILING,
    PASSING,
    colour_features,
    hashed_text,
    known_embeddings,
    separable_rows,
    write_dataset,
)
from gymnasium.utils.env_checker import check_env
from hydra import compose, initialize_config_module
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from diagnosis.continuous_env import ContinuousRewards, ContinuousSearchEnv
from diagnosis.continuous_search import ContinuousSearch, PolicySpace, density_scores, run_continuous_search
from diagnosis.embed import EmbedConfig, train_embedding
from diagnosis.rank_unseen import main as rank_unseen_main
from diagnosis.search import main_continuous

torch.set_num_threads(1)


def test_continuous_env_passes_the_env_checkers():
    env = ContinuousSearchEnv("lift", known_embeddings())
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


@pytest.mark.parametrize("failed", [True, False])
def test_reward_is_finite_on_a_known_embedding(failed):
    """RoboMD's code divides by the distance: an action exactly on a known embedding gave an infinite reward."""
    known = known_embeddings()
    rewards = ContinuousRewards(c_fail=2.0, c_success=1.0, horizon=10)
    env = ContinuousSearchEnv("lift", known, rewards=rewards)
    env.reset(seed=0)
    row = int(np.flatnonzero(known.failed == failed)[0])
    _, reward, terminated, _, info = env.step(known.embeddings[row])
    assert info["row"] == row and info["distance"] == 0.0 and info["penalty"] == 0.0
    assert reward == (2.0 if failed else -0.1) and terminated == failed
    for penalty in (0.0, 1e-12, 1.0, 1e6):
        assert np.isfinite(rewards(True, penalty, 0)) and np.isfinite(rewards(False, penalty, 0))
    assert rewards(True, 1.0, 0) < rewards(True, 0.0, 0)  # farther from what was run, less sure, less reward
    with pytest.raises(ValueError, match="must be >= 0"):
        rewards(True, -1.0, 0)


def test_repeat_counter_counts_consecutive_repeats_of_the_previous_match_across_episodes():
    """RoboMD's counter compared every action with the run's first one."""
    known = known_embeddings()
    env = ContinuousSearchEnv("lift", known, rewards=ContinuousRewards(repeat_cost=0.25))
    env.reset(seed=0)
    first = int(np.flatnonzero(known.failed)[0])
    same = next(i for i in range(len(known)) if known.perturbations[i] == known.perturbations[first] and i != first)
    other = next(i for i in np.flatnonzero(known.failed) if known.perturbations[i] != known.perturbations[first])
    repeats, rewards = [], []
    for row in (first, same, first, other, first):
        env.reset()  # a failure ends the episode; the counter carries over
        _, reward, _, _, info = env.step(known.embeddings[row])
        repeats.append(info["repeats"])
        rewards.append(reward)
    assert repeats == [0, 1, 2, 0, 0]
    assert rewards[2] == pytest.approx(1.0 - 0.5)
    env.reset(seed=1)  # a seeded reset starts a new search
    assert env.step(known.embeddings[first])[4]["repeats"] == 0


def test_episode_truncates_after_horizon_successes():
    known = known_embeddings()
    env = ContinuousSearchEnv("lift", known, rewards=ContinuousRewards(horizon=3))
    env.reset(seed=0)
    success = known.embeddings[int(np.flatnonzero(~known.failed)[0])]
    outcomes = [env.step(success)[2:4] for _ in range(3)]
    assert outcomes == [(False, False), (False, False), (False, True)]


def test_bad_env_inputs():
    with pytest.raises(ValueError, match="embedding= is required"):
        ContinuousSearchEnv("lift")
    with pytest.raises(ValueError, match="of task 'lift', not 'can'"):
        ContinuousSearchEnv("can", known_embeddings("lift"))
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        ContinuousSearchEnv("lift", known_embeddings(), rewards=ContinuousRewards(horizon=0))


def test_policy_space_is_the_principal_subspace_in_units_of_the_first_spread():
    known = known_embeddings(dim=8)
    space = PolicySpace.of(known, components=3)
    assert space.basis.shape == (3, 8) and space.dim == 3
    np.testing.assert_allclose(space.basis @ space.basis.T, np.eye(3), atol=1e-5)
    coords = space.to_policy(known.embeddings)
    np.testing.assert_allclose(coords.mean(0), 0, atol=1e-5)
    spread = coords.std(0, ddof=1)
    assert spread[0] == pytest.approx(1, abs=1e-4) and np.all(spread[1:] < 0.5)  # one scale: the geometry is kept
    assert abs(space.basis[0, 0]) > 0.9  # the first component is the outcome axis
    np.testing.assert_allclose(space.to_policy(space.to_embedding(coords)), coords, atol=1e-4)
    whitened = PolicySpace.of(known, components=3, whiten=True).to_policy(known.embeddings)
    np.testing.assert_allclose(whitened.std(0, ddof=1), 1, atol=1e-4)
    assert PolicySpace.of(known, components=0).dim == 8
    with pytest.raises(ValueError, match="components must be >= 0"):
        PolicySpace.of(known, components=-1)


def test_density_scores_keep_order_without_underflow():
    scores = density_scores(np.array([-5000.0, -100.0, -20000.0]), dim=512)
    assert np.all(scores > 0) and scores[1] == 1.0 and scores[0] > scores[2]


# ---------------------------------------------------------------------------------------------------- end to end
HELD_OUT = ("cube_color_blue", "table_color_gray")


def continuous_config(embedding, *overrides):
    with initialize_config_module("diagnosis.conf", version_base=None):
        return compose(
            "config",
            overrides=[
                "search=continuous",
                "monitor=none",
                f"search.embedding={embedding}",
                f"task.exclude=[{','.join(HELD_OUT)}]",
                "search.total_steps=256",
                "search.curve_every=128",
                "search.components=4",
                "search.hyperparameters.ppo.n_steps=128",
                "search.hyperparameters.ppo.batch_size=64",
                "search.hyperparameters.ppo.n_epochs=2",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def embedding_dir(tmp_path_factory):
    """An embedding with the real image encoder (the shipped EfficientNet-Lite0), trained on a tiny fake search; the
    sentence model is faked (importing sentence-transformers alone takes ~10 s; tests/test_embedding.py runs it)."""
    root = tmp_path_factory.mktemp("continuous")
    run = write_dataset(root / "search", separable_rows(40))
    config = EmbedConfig(
        data=str(run), epochs=20, dim=16, hidden=32, batch_size=32, cache="none", exclude=",".join(HELD_OUT)
    )
    return train_embedding(config, text_encoder=hashed_text, progress=False).save(root / "embedding")


@pytest.fixture(scope="module")
def search_run(embedding_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("continuous") / "run"
    return run_dir, run_continuous_search(continuous_config(embedding_dir), run_dir)


def test_continuous_search_ranks_the_known_perturbations(search_run):
    run_dir, summary = search_run
    assert summary["status"] == "complete" and summary["method"] == "continuous"
    assert summary["budget"]["search_steps"] >= 256
    assert {r["perturbation"] for r in summary["ranking"]} == set(FAILING + PASSING)
    assert summary["held_out"] == list(HELD_OUT) and not set(HELD_OUT) & set(summary["unseen"])
    assert [c["steps"] for c in summary["curve"]] == [0, 128, 256]
    assert summary["ground_truth"]["compared"] == 6
    assert json.loads((run_dir / "summary.json").read_text())["ranking"] == summary["ranking"]
    assert (run_dir / "radar.png").stat().st_size > 10_000
    loaded = ContinuousSearch.load(run_dir)
    rows = {r["perturbation"]: r["log_density"] for r in summary["ranking"]}
    for name, value in rows.items():
        embeddings = loaded.known.embeddings[loaded.known.rows_of(name)]
        assert loaded.log_density(embeddings).mean() == pytest.approx(value, rel=1e-4)


def test_search_cli_dispatches_continuous(embedding_dir, tmp_path):
    out = tmp_path / "run"
    overrides = [
        "search=continuous",
        "monitor=none",
        f"search.embedding={embedding_dir}",
        f"task.exclude=[{','.join(HELD_OUT)}]",
        "search.total_steps=128",
        "search.curve_every=128",
        "search.components=4",
        "search.hyperparameters.ppo.n_steps=128",
        "search.hyperparameters.ppo.batch_size=64",
        "search.hyperparameters.ppo.n_epochs=1",
        f"hydra.run.dir={out}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "diagnosis.search", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"summary: {out / 'summary.json'}"
    assert json.loads((out / "summary.json").read_text())["method"] == "continuous"


def test_continuous_runs_are_not_resumable(embedding_dir):
    with pytest.raises(ValueError, match="not resumable"):
        main_continuous(continuous_config(embedding_dir, "search.resume=somewhere"))


def test_sac_baseline_runs(embedding_dir, tmp_path):
    config = continuous_config(
        embedding_dir,
        "search.algorithm=sac",
        "search.hyperparameters.sac.learning_starts=64",
        "search.hyperparameters.sac.batch_size=32",
        "search.total_steps=128",
        "search.curve_every=128",
    )
    summary = run_continuous_search(config, tmp_path / "sac")
    assert summary["algorithm"] == "sac" and all(np.isfinite(r["log_density"]) for r in summary["ranking"])
    assert ContinuousSearch.load(tmp_path / "sac").summary["algorithm"] == "sac"


def test_an_embedding_that_saw_a_held_out_perturbation_is_refused(embedding_dir, tmp_path):
    config = continuous_config(embedding_dir, f"task.exclude=[{FAILING[0]}]")
    with pytest.raises(ValueError, match=f"holds out {FAILING[0]}, but the embedding .* was trained on rollouts"):
        run_continuous_search(config, tmp_path / "run")
    with pytest.raises(ValueError, match="unknown search.algorithm 'ddpg'; valid: ppo, sac"):
        run_continuous_search(continuous_config(embedding_dir, "search.algorithm=ddpg"), tmp_path / "run")


def test_rank_unseen_cli_ranks_held_out_perturbations_from_one_rendered_frame(search_run, tmp_path, capsys):
    run_dir, _ = search_run
    out = tmp_path / "unseen.json"
    rank_unseen_main([f"run={run_dir}", f"perturbations={','.join(HELD_OUT)},{PASSING[0]}", "seeds=1", f"out={out}"])
    printed = capsys.readouterr().out
    last = printed.strip().splitlines()[-1]
    assert last.startswith("ranking: ") and set(last.removeprefix("ranking: ").split(",")) == {*HELD_OUT, PASSING[0]}
    rows = {r["perturbation"]: r for r in json.loads(out.read_text())}
    assert not rows[HELD_OUT[0]]["seen"] and rows[PASSING[0]]["seen"]
    assert all(np.isfinite(r["log_density"]) and r["reliability"] >= 0 for r in rows.values())


def test_rank_unseen_cli_bad_input(search_run, tmp_path):
    run_dir, _ = search_run
    with pytest.raises(SystemExit, match="unknown perturbation.*black_table, purple_cube.*valid: cube_color_red"):
        rank_unseen_main([f"run={run_dir}", "perturbations=black_table,cube_color_blue,purple_cube"])
    with pytest.raises(SystemExit, match="is not a continuous search run"):
        rank_unseen_main([f"run={tmp_path}", "perturbations=cube_color_blue"])
    with pytest.raises(SystemExit, match="name at least one perturbation"):
        rank_unseen_main([f"run={run_dir}"])


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "sac"])
def test_agent_moves_its_gaussian_to_the_failures(tmp_path, algorithm):
    """On a balanced known set the centroid, where the Gaussian starts, is no closer to failures than to successes;
    the ranking is only right if the agent learns where the failures are (PPO about 25 s of CPU, SAC 80 s)."""
    run = write_dataset(tmp_path / "search", separable_rows(200))
    config = EmbedConfig(data=str(run), epochs=40, dim=16, hidden=32, batch_size=32, cache="none")
    embedding = train_embedding(config, colour_features, hashed_text, progress=False).save(tmp_path / "embedding")
    with initialize_config_module("diagnosis.conf", version_base=None):
        cfg = compose(
            "config",
            overrides=[
                "search=continuous",
                "monitor=none",
                f"search.embedding={embedding}",
                "search.total_steps=10000",
                "search.curve_every=2000",
                "search.components=4",
                f"search.algorithm={algorithm}",
            ],
        )
    summary = run_continuous_search(cfg, tmp_path / "run")
    assert summary["ground_truth"]["pairwise_accuracy"] >= 0.85


def test_rank_unseen_ranks_a_user_defined_perturbation_no_search_ever_tried(search_run, tmp_path):
    from diagnosis.embed import SceneEmbedder
    from diagnosis.rank_unseen import first_frames, rank_unseen
    from envs.perturbations.user import load_perturbation_file

    run_dir, _ = search_run
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "- {name: cube_color_teal, family: object_color, description: the cube is teal, rgba: [0, 0.5, 0.5, 1]}\n"
    )
    search = ContinuousSearch.load(run_dir)
    names = ["cube_color_teal", PASSING[0]]
    # The CLI builds the same embedder with the embedding's own text encoder; this one was trained on hashed text.
    embedder = SceneEmbedder(search.trained, text=hashed_text, extra=load_perturbation_file(mine))
    rows = rank_unseen(search, names, first_frames(search.trained.task, names, 1, str(mine)), embedder)
    assert {r["perturbation"] for r in rows} == set(names)
    assert not next(r for r in rows if r["perturbation"] == "cube_color_teal")["seen"]
    with pytest.raises(SystemExit, match="unknown perturbation.*cube_color_teal"):
        rank_unseen_main([f"run={run_dir}", "perturbations=cube_color_teal"])  # without the file it is unknown
    with pytest.raises(SystemExit, match="perturbation file .*missing.yaml does not exist"):
        rank_unseen_main(
            [f"run={run_dir}", "perturbations=cube_color_teal", f"perturbation_file={tmp_path / 'missing.yaml'}"]
        )
