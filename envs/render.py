"""Fast offscreen rendering of the policy's camera.

Rendering dominates a rollout. Stock robosuite renders an 84×84 agentview in ~50–68 ms on this software-GL machine;
shadows, reflections, multisampling and an oversized framebuffer cost most of that, and none of them matter to an
84-pixel policy. `RenderConfig.stock()` keeps robosuite's look for comparison.
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class RenderConfig:
    """What the renderer draws."""

    shadows: bool = False
    """Shadow maps: the single most expensive effect under software GL."""
    reflections: bool = False
    """Mirror reflections of the floor and table."""
    msaa_samples: int = 0
    """Multisample anti-aliasing samples of the offscreen buffer (robosuite's model uses 4)."""
    hide_collision_geoms: bool = True
    """Skip group-0 (collision) geoms: they duplicate the visual ones."""
    camera_sized_buffer: bool = True
    """Size the offscreen framebuffer to the image instead of the model's 640×480 default."""

    @classmethod
    def stock(cls) -> RenderConfig:
        return cls(
            shadows=True, reflections=True, msaa_samples=4, hide_collision_geoms=False, camera_sized_buffer=False
        )


class CameraRenderer:
    """Renders one named camera of a live model into uint8 RGB images.

    Images are upright (row 0 is the top of the picture, OpenCV convention), i.e. robosuite's camera observations
    with `macros.IMAGE_CONVENTION = "opencv"`. robosuite's default ("opengl") is this image flipped vertically;
    `flip_to_opengl(image)` converts for checkpoints trained on such data.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        camera: str,
        height: int = 84,
        width: int | None = None,
        config: RenderConfig = RenderConfig(),
    ):
        width = width or height
        self.camera = camera
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ValueError(f"unknown camera {camera!r}; valid cameras: {', '.join(names)}")
        # The GL context reads these when it is created: a buffer the size of the image, no MSAA.
        model.vis.quality.offsamples = config.msaa_samples
        if config.camera_sized_buffer:
            model.vis.global_.offwidth, model.vis.global_.offheight = width, height
        else:
            model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
            model.vis.global_.offheight = max(height, model.vis.global_.offheight)
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = config.shadows
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = config.reflections
        # Free the GL context before interpreter teardown unloads EGL (else a noisy error at exit).
        atexit.register(self.close)
        self._option = mujoco.MjvOption()
        if config.hide_collision_geoms:
            self._option.geomgroup[0] = 0

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """The camera image of the current state, uint8 (H, W, 3), upright."""
        self._renderer.update_scene(data, camera=self.camera, scene_option=self._option)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
            atexit.unregister(self.close)


def flip_to_opengl(image: np.ndarray) -> np.ndarray:
    """robosuite's default image convention (vertically flipped)."""
    return np.ascontiguousarray(image[..., ::-1, :, :])
