import numpy as np
import pytest

from envs.render import CameraRenderer, RenderConfig, flip_to_opengl


def test_fast_frame_is_upright_uint8_and_close_to_the_stock_look(lift_runner):
    scene = lift_runner.scene
    scene.reset(seed=0)
    fast = lift_runner.renderer.render(scene.data)
    assert fast.shape == (84, 84, 3) and fast.dtype == np.uint8
    # Upright: the white table fills the bottom rows, the darker wall and robot base the top rows.
    assert fast[-10:].mean() > fast[:8].mean() + 40
    stock_renderer = CameraRenderer(scene.model, "agentview", 84, config=RenderConfig.stock())
    stock = stock_renderer.render(scene.data)
    stock_renderer.close()
    # Same scene, same camera: only shading effects differ.
    assert np.abs(fast.astype(float) - stock.astype(float)).mean() < 25
    np.testing.assert_array_equal(flip_to_opengl(fast)[0], fast[-1])


def test_unknown_camera_lists_valid_ones(lift_runner):
    with pytest.raises(ValueError, match="valid cameras: .*agentview"):
        CameraRenderer(lift_runner.scene.model, "topview", 84)
