"""The robomimic adapter on a tiny checkpoint built here with robomimic's own factories."""

import numpy as np
import pytest

pytest.importorskip("robomimic")

from envs.hdf5 import env_args  # noqa: E402
from envs.rollout import rollout  # noqa: E402
from envs.tasks import get_task  # noqa: E402
from policies.registry import load_policy  # noqa: E402


def build_tiny_checkpoint(path, env_name="Lift", ac_dim=7):
    import robomimic.utils.obs_utils as ObsUtils
    import robomimic.utils.train_utils as TrainUtils
    import torch
    from robomimic.algo import algo_factory
    from robomimic.config import config_factory

    config = config_factory("bc")
    with config.values_unlocked():
        config.observation.modalities.obs.low_dim = ["robot0_eef_pos", "object"]
        config.observation.modalities.obs.rgb = ["agentview_image"]
        config.observation.encoder.rgb.core_kwargs.backbone_class = "ShallowConv"
        config.observation.encoder.rgb.core_kwargs.backbone_kwargs = {}
        config.observation.encoder.rgb.core_kwargs.pool_class = None
        config.observation.encoder.rgb.obs_randomizer_class = None
        config.algo.actor_layer_dims = (16,)
    ObsUtils.initialize_obs_utils_with_config(config)
    shapes = {"robot0_eef_pos": [3], "object": [10], "agentview_image": [3, 84, 84]}
    shape_meta = {"ac_dim": ac_dim, "all_shapes": shapes, "all_obs_keys": list(shapes), "use_images": True}
    model = algo_factory(config.algo_name, config, obs_key_shapes=shapes, ac_dim=ac_dim, device=torch.device("cpu"))
    env_meta = env_args(get_task("lift"))
    env_meta["env_name"] = env_name
    TrainUtils.save_model(model, config, env_meta, shape_meta, str(path))
    return path


def test_robomimic_checkpoint_runs_in_a_rollout(tmp_path):
    path = build_tiny_checkpoint(tmp_path / "bc.pth")
    policy, task = load_policy(str(path))
    assert task.name == "lift" and "object-state" in policy.obs_keys and "agentview_image" in policy.obs_keys
    episode = rollout("lift", policy, seed=0, record=True)
    assert episode.actions.shape == (episode.length, 7) and episode.length > 0
    # The adapter feeds robomimic what its own robosuite wrapper would: upright CHW floats in [0, 1], `object`.
    obs = {k: v[0] for k, v in episode.observations.items()} | {"agentview_image": episode.frames[0]}
    policy.reset()
    adapted = policy.act(obs)
    policy.reset()
    direct = policy.policy(
        ob={
            "robot0_eef_pos": obs["robot0_eef_pos"],
            "object": obs["object-state"],
            "agentview_image": episode.frames[0].transpose(2, 0, 1).astype(np.float32) / 255.0,
        }
    )
    np.testing.assert_allclose(adapted, direct, rtol=1e-5, atol=1e-6)


def test_robomimic_checkpoint_for_an_unknown_env_is_refused(tmp_path):
    path = build_tiny_checkpoint(tmp_path / "door.pth", env_name="Door")
    with pytest.raises(ValueError, match="env 'Door'; FailScope tasks: Lift"):
        load_policy(str(path))


def test_robomimic_checkpoint_with_wrong_action_dim_is_refused(tmp_path):
    path = build_tiny_checkpoint(tmp_path / "bc4.pth", ac_dim=4)
    with pytest.raises(ValueError, match="action dim 4"):
        load_policy(str(path))
