"""The monitor as the failure search uses it: built from scripted-expert rollouts, cached, and run inside
`envs.rollout.rollout(..., monitor=...)` on Lift."""

import importlib

import numpy as np
import pytest

import monitor.build
from envs.rollout import rollout
from monitor.base import MonitorOutput, summarize
from monitor.build import build_monitor, cache_path, policy_fingerprint
from monitor.fidel import FidelConfig, FidelMonitor
from policies.registry import shipped_checkpoints
from policies.scripted import ScriptedExpert

CONFIG = FidelConfig(alpha=0.5)
EPISODES = 6  # the fewest for alpha=0.5: 2 memory, 2 E_A, 2 E_B; enough for plumbing, not for statistics


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[FidelMonitor, object]:
    cache = tmp_path_factory.mktemp("monitors")
    return build_monitor("lift", "scripted", episodes=EPISODES, seed=500, cache_dir=cache, config=CONFIG), cache


def test_monitor_runs_inside_a_rollout(built):
    fitted, _ = built
    episode = rollout("lift", ScriptedExpert("lift"), seed=3, monitor=fitted)
    assert episode.success and len(episode.monitor_outputs) == episode.length
    assert all(isinstance(o, MonitorOutput) and o.heatmap.shape == (7, 7) for o in episode.monitor_outputs)
    t_min = [o.t_min for o in episode.monitor_outputs]
    assert t_min[0] <= 2 and t_min[-1] >= fitted.memory.steps // 2  # the episode advances through the memory
    dimmed = rollout("lift", ScriptedExpert("lift"), ["light_dim"], seed=3, monitor=fitted)
    assert summarize(dimmed.monitor_outputs).anomaly_frames == dimmed.length
    nominal_max = max(o.score for o in episode.monitor_outputs)
    assert min(o.score for o in dimmed.monitor_outputs) > 2 * nominal_max


def test_second_build_loads_from_the_cache(built, monkeypatch):
    fitted, cache = built
    (path,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert path.name.startswith("lift-scripted-") and (path / "monitor.json").is_file()

    def no_rollouts(*args, **kwargs):
        raise AssertionError("a cached monitor must not collect rollouts")

    monkeypatch.setattr(monitor.build, "collect_nominal", no_rollouts)
    loaded = build_monitor("lift", "scripted", episodes=EPISODES, seed=500, cache_dir=cache, config=CONFIG)
    np.testing.assert_array_equal(loaded.memory.reference_frames, fitted.memory.reference_frames)
    assert cache_path("lift", "scripted", EPISODES, 500, FidelConfig(alpha=0.4), cache) != path
    assert cache_path("lift", "scripted", EPISODES, 501, CONFIG, cache) != path


def test_cache_keys_and_root():
    assert policy_fingerprint("scripted") == "scripted"
    digest = policy_fingerprint("lift_bc_image")  # a shipped checkpoint: keyed by its files' content
    assert len(digest) == 64 and digest == policy_fingerprint(str(shipped_checkpoints()["lift_bc_image"]))


def test_cache_root_follows_failscope_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FAILSCOPE_CACHE", str(tmp_path))
    try:
        assert importlib.reload(monitor.build).CACHE_ROOT == tmp_path / "monitors"
    finally:
        monkeypatch.undo()
        importlib.reload(monitor.build)


def test_semantic_auto_uses_the_policy_s_shipped_filter_else_none():
    from monitor.build import resolve_semantic
    from monitor.train_filter import shipped_filter

    shipped = shipped_filter("lift_bc_image")
    assert shipped is not None and (shipped / "semantic_filter.safetensors").is_file()
    assert resolve_semantic("auto", {}, "lift_bc_image") == ("trained", {"path": str(shipped)})
    assert resolve_semantic("trained", {}, "lift_bc_image") == ("trained", {"path": str(shipped)})
    assert resolve_semantic("auto", {}, "scripted") == ("none", {})
    assert resolve_semantic("trained", {"path": "x"}, "scripted") == ("trained", {"path": "x"})
    with pytest.raises(ValueError, match="no trained semantic filter ships for policy 'scripted'.*train_filter"):
        resolve_semantic("trained", {}, "scripted")
    with pytest.raises(ValueError, match="valid: auto, none, vlm, trained"):
        resolve_semantic("oracle", {}, "lift_bc_image")
