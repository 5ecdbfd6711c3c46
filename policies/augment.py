"""Training-time image augmentations for behaviour cloning, by name (`augment=crop,colour` on policies.train).

Random crops teach a policy that the scene may sit a few pixels off; colour jitter teaches it that brightness,
contrast, saturation and a moderate hue shift say nothing about where the cube is. Neither teaches it about large
colour changes (a blue cube, a black table) or new viewpoints, so a jittered policy is more robust than a plain
one but not immune: that gradation is what makes it a useful policy under test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs.choices import Registry

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""(N, H, W, 3) uint8 frames, generator → frames of the same dtype (the crop also shrinks H and W)."""

# YIQ: Y is luma, (I, Q) the chroma plane; a hue shift is a rotation of that plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


@dataclass(frozen=True)
class ColourJitter:
    """Per-frame random brightness, contrast, saturation and hue, drawn uniformly within these half-widths."""

    brightness: float = 0.3
    """Gain in [1 - b, 1 + b]."""
    contrast: float = 0.3
    """Stretch about the frame's mean luma, in [1 - c, 1 + c]."""
    saturation: float = 0.4
    """Chroma gain in [1 - s, 1 + s]."""
    hue: float = 0.08
    """Hue rotation in [-h, h] turns (0.08 turns ≈ 29°: red stays reddish)."""

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ColourJitter.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ColourJitter.hue must be in [0, 0.5] turns, got {self.hue}")

    def matrices(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The per-frame linear colour maps in YIQ space (n, 3, 3) and contrast factors (n,)."""
        gain = rng.uniform(1 - self.brightness, 1 + self.brightness, n)
        chroma = rng.uniform(1 - self.saturation, 1 + self.saturation, n)
        angle = rng.uniform(-self.hue, self.hue, n) * 2 * np.pi
        contrast = rng.uniform(1 - self.contrast, 1 + self.contrast, n)
        cos, sin = np.cos(angle) * chroma, np.sin(angle) * chroma
        yiq = np.zeros((n, 3, 3), dtype=np.float32)
        yiq[:, 0, 0] = 1.0
        yiq[:, 1, 1], yiq[:, 1, 2], yiq[:, 2, 1], yiq[:, 2, 2] = cos, -sin, sin, cos
        return yiq * gain[:, None, None].astype(np.float32), contrast.astype(np.float32)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        yiq_map, contrast = self.matrices(len(images), rng)
        # One 3×3 map per frame: RGB → YIQ → (scale, rotate chroma) → RGB.
        rgb_map = _YIQ_TO_RGB[None] @ yiq_map @ _RGB_TO_YIQ[None]
        x = np.einsum("nij,nhwj->nhwi", rgb_map, images.astype(np.float32))
        mean = (x @ _RGB_TO_YIQ[0]).mean(axis=(1, 2))[:, None, None, None]
        x = (x - mean) * contrast[:, None, None, None] + mean
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def random_crop(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A `size`×`size` window at a random place of each frame."""
    n, h, w = images.shape[:3]
    if size > min(h, w):
        raise ValueError(f"crop size {size} is larger than the {h}×{w} frames")
    tops, lefts = rng.integers(0, h - size + 1, n), rng.integers(0, w - size + 1, n)
    return np.stack([img[t : t + size, l : l + size] for img, t, l in zip(images, tops, lefts)])


AUGMENTATIONS: Registry[Callable[[int], Augmentation]] = Registry(
    "augmentation",
    {
        "crop": lambda crop_size: lambda images, rng: random_crop(images, crop_size, rng),
        "colour": lambda crop_size: ColourJitter(),
    },
)
"""Name → builder taking the crop size. A policy always sees centre crops at inference; training without `crop`
centre-crops too."""
