"""SimFails labels: the rules of monitor/dataset.py on hand-made episodes, and a tiny real run of the CLI (scripted
expert, short horizon) whose frames and labels line up with the event onset."""

from dataclasses import replace

import h5py
import numpy as np
import pytest

from envs.hdf5 import EpisodeWriter
from envs.perturbations import task_perturbations
from envs.rollout import Episode
from envs.tasks import get_task
from monitor.dataset import DatasetConfig, Job, frame_labels, main, plan, read_split, write_masks, written_jobs

LIFT = get_task("lift")
CATALOGUE = task_perturbations(LIFT)


def episode(length: int, outcome: str = "failure", failure_step: int | None = None, cube: np.ndarray | None = None):
    cube = np.zeros((length, 3)) if cube is None else cube
    return Episode(
        task="lift",
        seed=0,
        perturbations=(),
        outcome=outcome,
        length=length,
        failure_step=failure_step,
        actions=np.zeros((length, 7)),
        states=np.zeros((length, 3)),
        observations={"cube_pos": cube},
    )


def test_nominal_success_has_no_labels_and_nominal_failure_is_late():
    labels = frame_labels(episode(30, "success"), None, late_step=40, task=LIFT)
    assert not labels.anomaly.any() and not labels.failure.any() and labels.failure_onset == -1
    labels = frame_labels(episode(100), None, late_step=40, task=LIFT)
    assert labels.visual_onset == -1 and labels.failure_onset == 40
    assert labels.failure[40:].all() and not labels.failure[:40].any()
    np.testing.assert_array_equal(labels.anomaly, labels.failure)  # a failure is always an anomaly


def test_reset_perturbations_visual_from_frame_zero_dynamics_invisible():
    labels = frame_labels(episode(100), CATALOGUE["cube_color_green"], late_step=40, task=LIFT)
    assert labels.visual_onset == 0 and labels.anomaly.all() and labels.failure_onset == 40
    labels = frame_labels(episode(35, "success"), CATALOGUE["cube_heavy"], late_step=40, task=LIFT)
    assert not labels.anomaly.any() and not labels.failure.any()
    labels = frame_labels(episode(100, failure_step=60), CATALOGUE["cube_slippery"], late_step=70, task=LIFT)
    assert labels.failure_onset == 60 and labels.anomaly[60:].all() and not labels.anomaly[:60].any()


def test_events_onsets():
    at = CATALOGUE["event_light_dim"].at_step
    labels = frame_labels(episode(30, "success"), CATALOGUE["event_light_dim"], late_step=40, task=LIFT)
    assert labels.visual_onset == at and labels.anomaly[at:].all() and not labels.anomaly[:at].any()
    assert not labels.failure.any()  # benign and the episode succeeded
    labels = frame_labels(episode(100), CATALOGUE["event_light_dim"], late_step=40, task=LIFT)
    assert labels.failure_onset == 40  # a benign event: the failure shows when the policy is late
    labels = frame_labels(episode(100), CATALOGUE["event_cube_teleport"], late_step=40, task=LIFT)
    assert labels.failure_onset == labels.visual_onset == CATALOGUE["event_cube_teleport"].at_step
    # A nudge shows once the cube has moved 1 cm from where it was at the event step.
    cube = np.zeros((50, 3))
    cube[at + 3 :, 1] = 0.02
    labels = frame_labels(episode(50, cube=cube), CATALOGUE["event_cube_nudge"], late_step=45, task=LIFT)
    assert labels.visual_onset == at + 3 and labels.failure_onset == at + 3
    # The forced-open gripper is anomalous while forced, from the frame after the first overridden action.
    gripper = CATALOGUE["event_gripper_open"]
    labels = frame_labels(episode(60, "success"), gripper, late_step=40, task=LIFT)
    window = np.zeros(60, bool)
    window[gripper.at_step + 1 : gripper.at_step + 1 + gripper.duration] = True
    np.testing.assert_array_equal(labels.anomaly.astype(bool), window)
    # An event after the episode ended leaves no label.
    labels = frame_labels(episode(10, "success"), CATALOGUE["event_cube_teleport"], late_step=40, task=LIFT)
    assert labels.visual_onset == -1 and not labels.anomaly.any()


def test_plan_uses_disjoint_seeds_and_checks_names():
    jobs = plan(DatasetConfig(test_reset=2, filter_reset=1), LIFT)
    seeds = {(j.split, j.seed) for j in jobs}
    assert len(seeds) == len(jobs)
    assert {j.seed for j in jobs if j.split == "filter"}.isdisjoint({j.seed for j in jobs if j.split == "test"})
    teleport_seed = 1000 * (list(CATALOGUE).index("event_cube_teleport") + 1)
    assert Job("test", "event", "event_cube_teleport", teleport_seed) in jobs
    with pytest.raises(ValueError, match="unknown event.*valid: all, none, event_light_dim"):
        plan(DatasetConfig(events="event_meteor"), LIFT)


def test_resume_skips_a_half_written_episode_and_rewrites_it(tmp_path):
    path = tmp_path / "simfails.hdf5"
    jobs = [Job("fit", "nominal", "", 100_000), Job("test", "nominal", "", 0)]
    attrs = [{"split": j.split, "kind": j.kind, "perturbation": j.perturbation} for j in jobs]
    with EpisodeWriter(path, LIFT, "<mujoco/>") as writer:
        writer.write(replace(episode(5, "success"), seed=100_000), attrs=attrs[0])
    with h5py.File(path, "a") as file:  # a run killed mid-write, before the completion marker existed
        group = file["data"].create_group("demo_1")
        group.attrs.update(num_samples=5, seed=0, **attrs[1])
        group.create_dataset("actions", data=np.zeros((5, 7)))
    assert written_jobs(path) == {jobs[0]}
    with EpisodeWriter(path, LIFT, "<mujoco/>") as writer:
        assert writer.discarded == ["demo_1"]
        assert writer.write(episode(5), attrs=attrs[1]) == "demo_1"
        assert write_masks(writer.file) == {"fit": 1, "filter": 0, "test": 1}
    assert written_jobs(path) == set(jobs)


def test_a_policy_that_never_succeeds_is_given_up_on_after_a_few_attempts(tmp_path, lift_runner):
    argv = [
        "task=lift",
        "policy=tests.fake_policies:Motionless",
        f"out={tmp_path / 'simfails.hdf5'}",
        "fit_episodes=40",
        "horizon=5",
        "workers=0",
    ]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    message = str(stop.value)
    assert message.startswith("error: tests.fake_policies:Motionless succeeded in only 0 of ") and "80" in message
    attempted = int(message.split(" of ")[1].split()[0])
    assert attempted < 20  # not 80 rollouts of a policy that cannot supply the fit split


def test_tiny_run_writes_aligned_frames_and_labels(tmp_path, lift_runner):  # lift_runner: robosuite warmed up
    out = tmp_path / "simfails.hdf5"
    teleport = CATALOGUE["event_cube_teleport"]
    argv = [
        "task=lift",
        "policy=scripted",
        f"out={out}",
        "fit_episodes=1",
        "max_fit_attempts=2",
        "test_nominal=0",
        "test_reset=0",
        "test_events=1",
        "filter_nominal=0",
        "filter_reset=0",
        "filter_events=0",
        "perturbations=none",
        "events=event_cube_teleport",
        "horizon=40",
        "workers=0",
    ]
    main(argv)
    with h5py.File(out, "r") as file:
        assert int(file["data"].attrs["late_step"]) <= 40
    (test,) = read_split(out, "test")
    frames, anomaly, failure = test["frames"], test["anomaly"], test["failure"]
    assert len(frames) == len(anomaly) == len(failure) == int(test["num_samples"]) and frames.dtype == np.uint8
    assert test["visual_onset"] == teleport.at_step
    assert anomaly[teleport.at_step :].all() and not anomaly[: teleport.at_step].any()
    with h5py.File(out, "r") as file:  # the cube jumped (in the simulator) exactly at the labelled onset
        cube = file["data"][test["demo"]]["obs"]["cube_pos"][:]
    jumps = np.linalg.norm(np.diff(cube[:, :2], axis=0), axis=1)
    assert int(np.argmax(jumps)) + 1 == teleport.at_step and jumps.max() > 0.05
    assert failure.any() == (test["outcome"] != "success")
    (fit,) = read_split(out, "fit")
    assert fit["outcome"] == "success" and not fit["anomaly"].any()


HELD_OUT_FAMILIES = {"nominal": "nominal", "benign": "camera_jitter", "failure": "object_push"}
"""SimFails v2's synthetic test split: held-out families (a moving scene, a triggered failure)."""


def synthetic_simfails(path, task: str = "lift", design: str = "seeds") -> None:
    """A SimFails-layout file of synthetic streams: a block sliding over a texture; from frame 5, benign episodes gain
    a cyan box at the bottom left, failing ones a dark slab at the top right. `design=families` marks the file
    SimFails v2 and gives the test episodes held-out families (plus two slower nominal successes)."""

    def frame(progress: float, jitter: int, kind: str, t: int) -> np.ndarray:
        y, x = np.mgrid[0:84, 0:84]
        image = np.stack([80 + 40 * np.sin(x / 6.0), 90 + 30 * np.cos(y / 5.0), 100 + 0 * x], -1)
        top, left = 20 + jitter, int(10 + 50 * progress) + jitter
        image[top : top + 18, left : left + 14] = (200, 60, 40)
        if kind == "failure" and t >= 5:
            image[2:30, 50:82] = (30, 30, 30)
        if kind == "benign" and t >= 5:
            image[50:80, 5:45] = (20, 220, 240)
        return image.astype(np.uint8)

    plan = [("fit", "nominal")] * 8 + [(s, k) for s in ("filter", "test") for k in ("nominal", "benign", "failure") * 2]
    if design == "families":
        plan += [("test", "slow")] * 2
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        data.attrs.update(task=task, late_step=16, design=design)
        for i, (split, kind) in enumerate(plan):
            rng = np.random.default_rng(i)
            length = int(rng.integers(12, 17)) * (2 if kind == "slow" else 1)
            frames = np.stack([frame(t / (length - 1), int(rng.integers(-1, 2)), kind, t) for t in range(length)])
            anomaly = (np.arange(length) >= 5) & (kind in ("benign", "failure"))
            families = {"nominal": "nominal", "benign": "distractor", "failure": "object_teleport"}
            if design == "families" and split == "test":
                families = {**HELD_OUT_FAMILIES, "slow": "action_scale"}
            group = data.create_group(f"demo_{i}")
            group.attrs.update(
                split=split,
                kind="nominal" if kind == "nominal" else "event",
                seed=i,
                num_samples=length,
                perturbation="" if kind == "nominal" else kind,
                outcome="failure" if kind == "failure" else "success",
                family=families[kind],
                failure_onset=5 if kind == "failure" else -1,
                failure_step=-1,
            )
            group.create_dataset("obs/agentview_image", data=frames)
            group.create_dataset("anomaly", data=anomaly.astype(np.uint8))
            group.create_dataset("failure", data=(anomaly & (kind == "failure")).astype(np.uint8))
        for split in ("fit", "filter", "test"):
            names = [f"demo_{i}" for i, (s, _) in enumerate(plan) if s == split]
            file.create_dataset(f"mask/{split}", data=np.array(names, dtype="S"))


def test_evaluate_cli_writes_every_table(tmp_path, capsys):
    from monitor.evaluate import main as evaluate

    data, out = tmp_path / "simfails.hdf5", tmp_path / "monitor.md"
    synthetic_simfails(data)
    evaluate([f"data={data}", f"out={out}", "alpha=0.3", "filters=none,trained", "autoencoder_epochs=3"])
    text = out.read_text()
    for heading in ("## Dataset", "raw frame scores", "thresholded", "by kind", "End-to-end", "Wall time"):
        assert heading in text
    for method in ("FIDeL (OT)", "PaDiM (global", "PaDiM-step", "PatchCore", "Conv autoencoder", "logpZO"):
        assert f"| {method}" in text
    assert "| FIDeL (OT) | trained | on |" in text and "| FIDeL (OT) | trained | off |" in text
    assert "CP-time&space" in text and "TPR without overrun" in text
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("fidel_auroc: ") and "margin:" in last
    fidel_auroc = float(last.split()[1])
    assert fidel_auroc > 90  # the synthetic anomalies are blatant


def test_evaluate_on_held_out_families_adds_false_alarms_and_lead_times(tmp_path, capsys):
    from monitor.evaluate import main as evaluate

    data = tmp_path / "simfails2.hdf5"
    synthetic_simfails(data, design="families")
    evaluate([f"data={data}", f"out={tmp_path / 'v2.md'}", "alpha=0.3", "filters=none", "methods=fidel,padim"])
    text = (tmp_path / "v2.md").read_text()
    assert text.startswith("# Runtime monitors on SimFails v2 (held-out families)-lift")
    for heading in ("failure AUROC per group", "false alarms and episode TPR", "detection lead time"):
        assert heading in text
    lines = text.splitlines()
    groups = [
        line
        for line in lines
        if line.startswith(("| benign: moving scene | camera_jitter |", "| benign: pace | action_scale |"))
    ]
    assert len(groups) == 2
    # The dark slab from frame 5 is blatant: every method flags it at once, at the onset frame, so the lead to the
    # onset is 0; the synthetic failures are timeouts, so no object was lost.
    lead = [line for line in lines if line.startswith("| FIDeL (OT) | none | off | object_push |")]
    (row,) = lead
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "2/2" and cells[5] == "+0" and cells[6] == "0" and cells[7] == "–"
    assert "false alarms on slower/faster/paused successes" in text and "simulator finds the object lost" in text


def test_train_filter_cli_writes_a_filter_that_tells_failures_from_benign_anomalies(tmp_path, capsys):
    from monitor.dataset import read_split
    from monitor.fidel import FidelConfig, FidelMonitor
    from monitor.semantic import build_semantic_filter
    from monitor.train_filter import main as train_filter

    data = tmp_path / "simfails.hdf5"
    synthetic_simfails(data)
    fit = [e["frames"] for e in read_split(data, "fit")]
    FidelMonitor.fit("lift", fit, FidelConfig(alpha=0.3)).save(tmp_path / "monitor")
    train_filter([f"data={data}", f"monitor={tmp_path / 'monitor'}", f"out={tmp_path / 'filter'}"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("trained on ") and lines[1].endswith("filter")
    # Held-out synthetic test split: without a filter every flagged frame is a failure; the filter keeps the
    # failures (dark slab) and drops the benign cyan boxes.
    numbers = [float(w.rstrip(",;")) for w in lines[-1].replace("/", " ").split() if w[0].isdigit() and "." in w]
    tpr_before, tnr_before, tpr_after, tnr_after, *without_rule = numbers
    assert tnr_after > tnr_before + 0.2 and tpr_after >= tpr_before - 0.05
    # Without the overrun rule late frames are failures only when the band and the filter say so: never more caught.
    tpr_before_off, tnr_before_off, tpr_after_off, tnr_after_off = without_rule
    assert tpr_before_off <= tpr_before and tpr_after_off <= tpr_after
    assert tnr_before_off >= tnr_before and tnr_after_off >= tnr_after
    trained = build_semantic_filter("trained", path=tmp_path / "filter")
    test = read_split(data, "test")
    failing = next(e for e in test if e["outcome"] == "failure")["frames"][8]
    benign = next(e for e in test if e["perturbation"] == "benign")["frames"][8]
    reference = fit[0][8]
    heat = np.ones((7, 7))
    assert trained("lift", reference, failing, heat)[0] and not trained("lift", reference, benign, heat)[0]


def test_vlm_filter_runs_end_to_end_on_held_out_families_against_an_endpoint(tmp_path):
    from fake_endpoint import FakeEndpoint, completion

    from monitor.evaluate import main as evaluate

    data, out = tmp_path / "simfails2.hdf5", tmp_path / "v2.md"
    synthetic_simfails(data, design="families")
    server = FakeEndpoint([completion('{"verdict": "benign", "reason": "only the scenery changed"}')])
    try:
        evaluate(
            [f"data={data}", f"out={out}", "alpha=0.3", "filters=none,vlm", "methods=padim"]
            + [f"vlm_base_url={server.base_url}", "vlm_model=test-vlm"]
        )
    finally:
        server.close()
    assert server.requests, "the vlm filter never asked the endpoint"
    images = [p for p in server.requests[0]["body"]["messages"][-1]["content"] if p.get("type") == "image_url"]
    assert len(images) == 3  # reference frame, current frame, heatmap
    text = out.read_text()
    # Every flagged frame called benign: without the overrun rule nothing is a failure, so no false alarm anywhere.
    alarms = text[text.index("## Held-out families: false alarms") : text.index("## Held-out failure events")]
    (row,) = [line for line in alarms.splitlines() if line.startswith("| PaDiM (global, LW cov) | vlm | off |")]
    assert row.count("0% (0/") >= 3 and "vlm filter (test-vlm)" in text


def test_lead_times_count_from_the_first_verdict_to_onset_and_to_the_object_lost():
    from types import SimpleNamespace

    from monitor.held_out import Verdicts, lead_times

    def item(family, outcome, onset, lost):
        return {"family": family, "outcome": outcome, "failure_onset": onset, "failure_step": lost}

    episodes = [
        item("object_push", "failure", 5, 12),  # flagged at 7: 2 frames after the onset, 5 before the loss
        item("object_push", "failure", 5, -1),  # a timeout: flagged at 3, before the onset; no loss to count to
        item("object_push", "failure", 5, 20),  # never flagged
        item("object_drop", "success", -1, -1),  # succeeded: not a failure to lead
        item("light_color", "failure", 0, -1),  # not a held-out failure event
    ]
    evaluation = SimpleNamespace(splits={"test": SimpleNamespace(episodes=episodes)})
    verdicts = Verdicts("fidel", "none", True, first=np.array([7, 3, -1, 2, 0]))
    (family,) = lead_times(evaluation, verdicts)
    onset, lost, missed = lead_times(evaluation, verdicts)[family]
    assert family == "object_push" and onset.tolist() == [-2, 2] and lost.tolist() == [5] and missed == 1
