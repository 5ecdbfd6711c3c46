import numpy as np
import pytest
import torch
from fake_embeddings import FAILING, PASSING, colour_features, hashed_text, separable_rows, write_dataset

from diagnosis.embed import EmbedConfig, TrainedEmbedding, load_rollouts, main, split, train_embedding
from diagnosis.embedding import EmbeddingConfig, EmbeddingLoss, FailureEmbedding, contrastive_loss

torch.set_num_threads(1)


def tiny_config(data, **overrides) -> EmbedConfig:
    settings = dict(task="lift", data=str(data), epochs=40, dim=16, hidden=32, batch_size=32, cache="", seed=0)
    return EmbedConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("search") / "run", separable_rows(60))


@pytest.fixture(scope="module")
def trained(run_dir) -> TrainedEmbedding:
    return train_embedding(
        tiny_config(run_dir), image_encoder=colour_features, text_encoder=hashed_text, progress=False
    )


def test_contrastive_loss_is_zero_for_ideal_embeddings_and_finite_at_coinciding_points():
    labels = torch.tensor([True, True, False, False])
    ideal = torch.tensor([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0], [2.0, 0.0]], requires_grad=True)
    loss = contrastive_loss(ideal, labels, margin=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-9)
    assert torch.isfinite(ideal.grad).all()
    close = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.5, 0.0], [0.5, 0.0]])
    assert contrastive_loss(close, labels, margin=1.0).item() > 0  # different outcomes closer than the margin


def test_loss_without_contrastive_term_is_bce():
    z, logits, success = torch.randn(6, 4), torch.randn(6), torch.tensor([1, 0, 1, 0, 1, 0]).bool()
    losses = EmbeddingLoss(contrastive_weight=0.0)(z, logits, success)
    assert losses["loss"].item() == pytest.approx(losses["bce"].item())


def test_model_standardises_inputs_and_image_only_ignores_text():
    model = FailureEmbedding(EmbeddingConfig(image_dim=3, text_dim=0, dim=4, hidden=8))
    image = torch.randn(10, 3) * 100 + 50
    model.fit_input_statistics(image, None)
    z, logits = model.eval()(image, torch.randn(10, 5))
    assert z.shape == (10, 4) and logits.shape == (10,)
    assert torch.allclose(model.input_mean, image.mean(0))
    with pytest.raises(ValueError, match="text features are required"):
        FailureEmbedding(EmbeddingConfig(image_dim=3, text_dim=2))(image, None)


def test_split_keeps_both_outcomes_on_both_sides():
    failed = np.array([True] * 9 + [False] * 3)
    valid = split(failed, 0.2, seed=0)
    for side in (valid, ~valid):
        assert failed[side].any() and not failed[side].all()


def test_training_on_a_tiny_dataset_separates_outcomes(trained):
    metrics = trained.meta["metrics"]
    assert metrics["head_accuracy"] >= 0.9 and metrics["knn5_accuracy"] >= 0.9
    known, failed = trained.known, trained.failed
    between = np.linalg.norm(known[failed].mean(0) - known[~failed].mean(0))
    within = max(np.linalg.norm(known[f] - known[f].mean(0), axis=1).mean() for f in (failed, ~failed))
    assert between > 2 * within
    assert trained.seen == sorted(FAILING + PASSING) and trained.policy == "lift_bc_image"


def test_saved_embedding_loads_identically_and_refuses_another_task_or_policy(trained, tmp_path):
    trained.save(tmp_path / "emb")
    loaded = TrainedEmbedding.load(tmp_path / "emb", "lift", "lift_bc_image")
    np.testing.assert_allclose(loaded.known, trained.known)
    assert loaded.perturbations == trained.perturbations
    image = colour_features(np.full((2, 84, 84, 3), 128, np.uint8))
    text = np.stack([trained.descriptions["cube_heavy"]] * 2)
    with torch.no_grad():
        inputs = torch.as_tensor(image), torch.as_tensor(text)
        for a, b in zip(loaded.model(*inputs), trained.model(*inputs)):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="trained on task 'lift', not 'can'"):
        TrainedEmbedding.load(tmp_path / "emb", "can")
    with pytest.raises(ValueError, match="policy 'lift_bc_image', not 'lift_bc_lowdim'"):
        TrainedEmbedding.load(tmp_path / "emb", "lift", "lift_bc_lowdim")
    with pytest.raises(FileNotFoundError, match="python -m diagnosis.embed"):
        TrainedEmbedding.load(tmp_path)


def test_single_outcome_dataset_is_an_error(tmp_path):
    run = write_dataset(tmp_path / "run", [(("cube_color_green",), True)] * 5)
    with pytest.raises(ValueError, match="all 5 rollouts failed.*needs both"):
        load_rollouts([run], "lift")
    # Excluding every success leaves one outcome too.
    run = write_dataset(tmp_path / "mixed", [(("cube_color_green",), True), (("cube_heavy",), False)])
    with pytest.raises(ValueError, match="all 1 rollouts failed"):
        load_rollouts([run], "lift", exclude=["cube_heavy"])


def test_exclude_drops_every_rollout_that_involved_a_held_out_perturbation(tmp_path):
    rows = [
        (("cube_color_green",), True),
        (("cube_heavy", "cube_color_green"), True),
        (("cube_heavy",), False),
        (("camera_noise",), False),
    ]
    rollouts = load_rollouts([write_dataset(tmp_path / "run", rows)], "lift", exclude=["cube_heavy"])
    assert rollouts.perturbations == (("cube_color_green",), ("camera_noise",))


def test_bad_inputs_name_the_problem(run_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown perturbation.*black_table.*valid: cube_color_red"):
        load_rollouts([run_dir], "lift", exclude=["black_table"])
    with pytest.raises(ValueError, match="holds rollouts of task 'lift', not 'can'"):
        load_rollouts([run_dir], "can")
    with pytest.raises(FileNotFoundError, match="no failure dataset there"):
        load_rollouts([tmp_path], "lift")
    with pytest.raises(ValueError, match="unknown frames 'all'; valid: first, mean"):
        train_embedding(tiny_config(run_dir, frames="all"), colour_features, hashed_text)
    with pytest.raises(ValueError, match="policy=lift_bc_lowdim but the data comes from a search of lift_bc_image"):
        train_embedding(tiny_config(run_dir, policy="lift_bc_lowdim"), colour_features, hashed_text)


def test_embed_cli_trains_and_saves_with_the_shipped_encoders(run_dir, tmp_path, capsys):
    """The real frozen encoders (EfficientNet-Lite0 and MiniLM, shipped in packages) on a tiny dataset."""
    out = tmp_path / "emb"
    main([f"data={run_dir}", f"out={out}", "epochs=5", "dim=16", "hidden=32", f"cache={tmp_path / 'cache'}"])
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1].startswith("knn5_accuracy: ")
    loaded = TrainedEmbedding.load(out, "lift")
    assert loaded.known.shape == (60, 16) and loaded.model.config.text_dim == 384
    assert len(loaded.descriptions) == 37  # 36 Lift perturbations and the nominal scene
    assert list((tmp_path / "cache").glob("*.safetensors"))  # image features cached for the next training


def test_embed_cli_errors_are_one_line(tmp_path):
    write_dataset(tmp_path / "run", [(("cube_color_green",), True)] * 3)
    with pytest.raises(SystemExit, match="error: all 3 rollouts failed"):
        main([f"data={tmp_path / 'run'}", "text_encoder=none", "cache=none"])
