"""I-FailSense: the voting rule, FS block shapes, what each training stage may change, the checkpoint round trip,
SMF pairing and splits, a real scripted episode, and the train → evaluate CLIs on a tiny language model built here."""

import itertools
import json

import h5py
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from monitor.failsense import dataset as smf
from monitor.failsense import evaluate, train
from monitor.failsense.behaviours import BEHAVIOURS, Behaviour, counterpart
from monitor.failsense.blocks import FSBlock, evenly_spaced_layers, weighted_vote
from monitor.failsense.model import FailSense, FailSenseConfig, language_folder, tiles_of


@pytest.fixture(scope="module")
def tiny_language(tmp_path_factory):
    """A randomly initialised 4-layer BERT with MiniLM's tokenizer, saved like a user's weights folder."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(language_folder("minilm"))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    return str(folder)


def tiny_model(language: str, image_dim: int = 10) -> FailSense:
    return FailSense(FailSenseConfig(language=language, block_hidden=16, block_depth=1), image_dim=image_dim)


def test_weighted_vote_is_the_papers_rule_and_the_head_breaks_ties():
    for *blocks, head in itertools.product((0, 1), repeat=4):
        expected = int(sum(blocks) + 2 * head > 0.5 * (3 + 2))
        got = weighted_vote(torch.tensor([blocks]), torch.tensor([head]))
        assert int(got) == expected
    # two blocks against one: the head's side wins
    assert weighted_vote(torch.tensor([[1, 1, 0], [1, 0, 0]]), torch.tensor([0, 1])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="block votes"):
        weighted_vote(torch.zeros(3), torch.zeros(3))


def test_layers_are_evenly_spaced_and_blocks_give_one_logit_per_example():
    assert evenly_spaced_layers(6, 3) == (2, 4, 6) and evenly_spaced_layers(12, 3) == (4, 8, 12)
    with pytest.raises(ValueError, match="K"):
        evenly_spaced_layers(4, 5)
    block = FSBlock(16, hidden=8, depth=2, heads=4)
    mask = torch.ones(5, 7)
    mask[0, 3:] = 0
    tokens = torch.randn(5, 7, 16)
    assert block(tokens, mask).shape == (5,)
    block.eval()
    changed = tokens.clone()
    changed[0, 3:] = 100.0  # padded tokens must not matter
    assert torch.allclose(block(tokens, mask)[0], block(changed, mask)[0], atol=1e-5)


def test_tiles_come_back_row_by_row():
    images = np.arange(2 * 6 * 12 * 3, dtype=np.uint8).reshape(2, 6, 12, 3)
    tiles = tiles_of(images, rows=2, cols=3)
    assert tiles.shape == (12, 3, 4, 3)
    assert np.array_equal(tiles[1], images[0, :3, 4:8]) and np.array_equal(tiles[3], images[0, 3:, :4])
    with pytest.raises(ValueError, match="trajectory images"):
        tiles_of(images, rows=4, cols=5)


def test_each_stage_trains_only_its_part_and_the_checkpoint_round_trips(tiny_language, tmp_path):
    model = tiny_model(tiny_language)
    stage1 = {id(p) for p in model.stage_parameters(1)}
    names1 = {n for n, p in model.named_parameters() if id(p) in stage1}
    assert names1 and all("lora_" in n or n.startswith(("projector", "head")) for n in names1)
    stage2 = {n for n, p in model.named_parameters() if id(p) in {id(q) for q in model.stage_parameters(2)}}
    assert stage2 and all(n.startswith("blocks") for n in stage2)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n not in stage2)
    patches, texts = torch.randn(3, 8, 10), ["lift the red cube", "lift the green cube", ""]
    before = model.predict(patches, texts)
    assert before["blocks"].shape == (3, 3) and set(before["vote"]) <= {0, 1}
    model.save(tmp_path / "ck", {"command": "test"})
    loaded = FailSense.load(tmp_path / "ck")
    after = loaded.predict(patches, texts)
    assert np.allclose(before["head"], after["head"]) and np.allclose(before["blocks"], after["blocks"])
    with pytest.raises(ValueError, match="config.json"):
        FailSense(FailSenseConfig(language=str(tmp_path)), image_dim=10)
    with pytest.raises(ValueError, match="not a FailSense checkpoint"):
        FailSense.load(tmp_path)


@pytest.fixture(scope="module")
def tiny_paligemma(tmp_path_factory):
    """A randomly initialised PaliGemma (SigLIP tower of 4 patches, a 3-layer Gemma2 decoder) with MiniLM's tokenizer,
    saved like a user's PaliGemma2 weights folder: nothing is downloaded."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny_paligemma")
    tokenizer = AutoTokenizer.from_pretrained(language_folder("minilm"))
    tokenizer.save_pretrained(folder)
    vocab = tokenizer.vocab_size + 1  # the last id is PaliGemma's image token
    torch.manual_seed(0)
    config = PaliGemmaConfig(
        vision_config={
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        text_config={
            "model_type": "gemma2",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "vocab_size": vocab,
        },
        projection_dim=32,
        image_token_index=vocab - 1,
        vocab_size=vocab,
    )
    PaliGemmaForConditionalGeneration(config).save_pretrained(folder)
    return str(folder)


def test_the_paligemma_path_reads_images_with_its_own_tower_and_trains_the_same_stages(tiny_paligemma, tmp_path):
    model = FailSense(FailSenseConfig(language=tiny_paligemma, block_hidden=16, block_depth=1))
    assert model.decoder and model.layer_ids == (1, 2, 3) and model.image_dim == 24
    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 128, 3), dtype=np.uint8)  # 4 tiles of 32 px
    patches = model.features(images)
    assert patches.shape == (3, 4, 24)  # the SigLIP tower's 4 patch states, frozen
    stage1 = {n for n, p in model.named_parameters() if id(p) in {id(q) for q in model.stage_parameters(1)}}
    assert any("lora_" in n and "q_proj" in n for n in stage1)
    assert all("lora_" in n or n.startswith(("projector", "head")) for n in stage1)
    assert not any(n.startswith("vision") for n in stage1)
    texts = ["lift the red cube", "stack the green cube on the blue cube", "lift the cube"]
    hidden, mask = model.encode(patches, texts)
    assert len(hidden) == 4 and mask.shape[1] == 4 + max(len(t.split()) for t in texts) + 2  # images, [CLS] … [SEP]
    # Right padding: the head reads each example's last instruction token, so padding a short one changes nothing.
    alone = model.head_logit(*model.encode(patches[2:], texts[2:]))
    torch.testing.assert_close(model.head_logit(hidden, mask)[2:], alone, atol=1e-5, rtol=1e-4)
    model.stage_parameters(2)
    loss = model.block_logits(hidden, mask).sum()
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("blocks"))
    before = model.predict(patches, texts)
    model.save(tmp_path / "ck")
    saved = json.loads((tmp_path / "ck" / "failsense.json").read_text())
    from safetensors.torch import load_file

    assert not any(k.startswith("vision.") for k in load_file(tmp_path / "ck" / "failsense.safetensors"))
    after = FailSense.load(tmp_path / "ck").predict(patches, texts)
    assert saved["image_dim"] == 24 and np.allclose(before["head"], after["head"])
    assert np.allclose(before["blocks"], after["blocks"])


def test_misaligned_instructions_never_match_their_trajectory_and_test_colours_stay_out_of_training():
    for b in BEHAVIOURS:
        other = counterpart(b)
        assert other.kind == b.kind and counterpart(other) == b
        for colours in ({"cubeA": "red", "cubeB": "green"}, {"cubeA": "blue", "cubeB": "yellow"}):
            assert other.instruction(colours) != b.instruction(colours)
    with pytest.raises(ValueError, match="behaviour"):
        Behaviour("stack", "cubeA")
    config = smf.DatasetConfig(test_pairs=["blue/yellow"], repeats=2, drops=1)
    plans = smf.episode_plans(config)
    assert len(plans) == 12 * 4 * 3 and len({p.seed for p in plans}) == len(plans)
    for p in plans:
        assert (p.split == "test") == (set(p.colours) == {"blue", "yellow"})
    assert {p.split for p in plans} == set(smf.SPLITS)
    assert {p.drop for p in plans if p.split == "valid"} == {False, True}  # both kinds reach validation
    with pytest.raises(ValueError, match="test pair"):
        smf.DatasetConfig(test_pairs=["blue/purple"])


def fake_smf(path, config: smf.DatasetConfig, rng) -> None:
    """An SMF file with random images in the generator's own layout (the examples are paired by write_examples)."""
    plans = smf.episode_plans(config)
    with smf.create_file(path, config, (16, 64, 3)) as file:
        for plan in plans:
            image = rng.integers(0, 255, (16, 64, 3), dtype=np.uint8)
            smf.append_episode(file, plan, image, done=not plan.drop, steps=10)
        smf.write_examples(file)


def test_examples_pair_each_success_both_ways_and_keep_controls_apart(tmp_path):
    config = smf.DatasetConfig(colours=["red", "green", "blue"], test_pairs=["green/blue"], repeats=1, drops=1)
    fake_smf(tmp_path / "smf.hdf5", config, np.random.default_rng(0))
    examples = smf.read_examples(tmp_path / "smf.hdf5")
    with h5py.File(tmp_path / "smf.hdf5") as file:
        episodes = file["episodes"]
        for i in examples.select(splits=smf.SPLITS, kinds=("misaligned",)):
            e = examples.episode[i]
            behaviour = smf.BY_NAME[episodes["behaviour"][e].decode()]
            colours = dict(zip(("cubeA", "cubeB"), episodes["colours"][e].decode().split("/")))
            assert examples.instruction[i] != behaviour.instruction(colours) and examples.label[i] == 1
    aligned, misaligned = (examples.select(splits=smf.SPLITS, kinds=(k,)) for k in ("aligned", "misaligned"))
    assert len(aligned) == len(misaligned) == 6 * 4 and (examples.label[aligned] == 0).all()
    drops = examples.select(splits=smf.SPLITS, kinds=("drop",))
    assert len(drops) == 6 * 4 and (examples.label[drops] == 1).all()


def test_a_scripted_episode_is_done_and_a_drop_is_not():
    config = smf.DatasetConfig(colours=["red", "green"], test_pairs=[], repeats=1, drops=1, max_steps=120)
    lift = [p for p in smf.episode_plans(config) if p.behaviour.name == "lift_cubeB"][:2]
    runner = smf.EpisodeRunner(config)
    try:
        (image, done, _), (_, dropped_done, _) = runner.run(lift[0]), runner.run(lift[1])
    finally:
        runner.close()
    assert image.shape == (84, 4 * 84, 3) and done and lift[1].drop and not dropped_done


def test_train_then_evaluate_clis_on_a_tiny_model(tiny_language, tmp_path, capsys):
    config = smf.DatasetConfig(colours=["red", "green", "blue"], test_pairs=["green/blue"], repeats=1, drops=1)
    data = tmp_path / "smf.hdf5"
    fake_smf(data, config, np.random.default_rng(1))
    out = tmp_path / "fs"
    args = [f"data={data}", f"out={out}", f"model.language={tiny_language}", "model.block_hidden=16"]
    train.main([*args, "stage1_epochs=1", "stage2_epochs=1", "batch=8"])
    card = json.loads((out / "failsense.json").read_text())
    assert len(card["valid_accuracy"]["stage1_head"]) == 1 and card["train_pairs"] > 0
    assert "model.language=" in card["command"]
    evaluate.main([f"checkpoint={out}", f"data={data}"])
    result = json.loads((out / "evaluation_test.json").read_text())
    assert result["smf"]["stage-1 head"]["n"] == 2 * 2 * 4  # two test colour orders × four behaviours, both ways
    assert result["control_failures"] == 6 * 4
    assert set(result["smf"]) >= {"vote (blocks + head)", "FS block, layer 4"}
    assert "false alarms of the vote" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="model.frames=4"):
        train.main([*args, "model.frames=2"])
    with pytest.raises(SystemExit, match="no SMF dataset"):
        train.main([f"data={tmp_path / 'missing.hdf5'}", f"out={out}"])
    with pytest.raises(SystemExit, match="split must be one of"):
        evaluate.main([f"checkpoint={out}", "split=dev"])


def test_the_failsense_filter_and_episode_verdict_from_a_checkpoint(tiny_language, tmp_path):
    from monitor.encoders import PatchEncoder
    from monitor.failsense.filter import FailSenseFilter
    from monitor.semantic import build_semantic_filter

    model = tiny_model(tiny_language, image_dim=PatchEncoder(FailSenseConfig().encoder()).feature_dim)
    model.save(tmp_path / "ck")
    monitor_filter = build_semantic_filter("failsense", path=str(tmp_path / "ck"))
    assert isinstance(monitor_filter, FailSenseFilter)
    frame = np.zeros((84, 84, 3), np.uint8)
    fails, why = monitor_filter("lift the cube", frame, frame + 50, np.zeros((7, 7), np.float32))
    assert isinstance(fails, bool) and why.startswith("I-FailSense")
    expected = model.predict(
        monitor_filter.features(np.concatenate([frame] * 2 + [frame + 50] * 2, axis=1)[None]), ["lift the cube"]
    )
    assert fails == bool(expected["vote"][0])
    assert isinstance(monitor_filter.episode(np.stack([frame] * 9), "lift the cube")[0], bool)
    with pytest.raises(ValueError, match="needs path="):
        build_semantic_filter("failsense")
