"""The `monitor=fidel` Hydra node comes from the monitor's dataclasses: one source of defaults, unknown keys refused."""

import dataclasses

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from monitor.build import MonitorRecipe, settings_node
from monitor.fidel import FidelConfig


def composed(*overrides: str) -> dict:
    with initialize_config_module("diagnosis.conf", version_base=None):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg.monitor, resolve=True)


def test_the_default_node_is_the_default_recipe():
    assert MonitorRecipe.from_settings("lift", "scripted", composed()) == MonitorRecipe("lift", "scripted")


def test_every_fidel_field_is_a_key_and_overrides_reach_the_config():
    node = settings_node()
    assert {f.name for f in dataclasses.fields(FidelConfig)} <= set(node)
    recipe = MonitorRecipe.from_settings(
        "lift", "scripted", composed("monitor.alpha=0.2", "monitor.ot.epsilon=1.0", "monitor.episodes=12")
    )
    assert recipe.config.alpha == 0.2 and recipe.config.ot.epsilon == 1.0 and recipe.episodes == 12
    assert recipe.config.encoder == FidelConfig().encoder  # nested configs rebuilt as dataclasses, not dicts


def test_an_unknown_key_is_refused_by_hydra_and_by_the_recipe():
    with pytest.raises(ConfigCompositionException, match="monitor.alphx"):
        composed("monitor.alphx=0.2")
    with pytest.raises(ValueError, match=r"unknown monitor setting\(s\) alphx; valid: .*alpha, band_radius"):
        MonitorRecipe.from_settings("lift", "scripted", composed("+monitor.alphx=0.2"))


def test_a_run_saved_with_fewer_keys_still_builds_its_recipe():
    saved = {"method": "fidel", "episodes": 40, "alpha": 0.1, "semantic": "none"}  # an older run's config.yaml
    recipe = MonitorRecipe.from_settings("lift", "scripted", saved)
    assert recipe.config == FidelConfig() and recipe.semantic == "none"
