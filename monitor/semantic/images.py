"""Images a semantic filter reads and sends: input checks, heatmap resizing and overlay, PNG data URLs."""

from __future__ import annotations

import base64
import io

import matplotlib
import numpy as np
from PIL import Image


def check_inputs(reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray) -> None:
    """ValueError unless both frames are uint8 (H, W, 3) and the heatmap a finite (h, w) grid."""
    for name, image in (("reference_frame", reference_frame), ("frame", frame)):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            given = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"{name} must be uint8 (H, W, 3), got {given}")
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2 or not np.isfinite(heatmap).all():
        raise ValueError(f"heatmap must be a finite (h, w) grid, got shape {heatmap.shape}")


def _resize_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) bilinear interpolation weights, pixel centres aligned (align_corners=False)."""
    position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    weight = position - low
    matrix = np.zeros((target, source))
    matrix[np.arange(target), low] += 1 - weight
    matrix[np.arange(target), high] += weight
    return matrix


def resize_grid(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a (h, w) map in float64, so a 7×7 heatmap lines up with a frame or another patch grid
    (torch's interpolate with align_corners=False, without importing torch; Pillow's resize rounds to float32)."""
    grid = np.asarray(grid, dtype=np.float64)
    return _resize_matrix(grid.shape[0], height) @ grid @ _resize_matrix(grid.shape[1], width).T


def overlay_heatmap(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The frame with the heatmap blended on top in matplotlib's jet colour map (blue = nominal, red = most
    anomalous), as the report draws it.

    Normalised per frame (min → blue, max → red): a VLM should read where the difference is, not its size, which
    the monitor has already judged.
    """
    check_inputs(frame, frame, heatmap)
    values = resize_grid(heatmap, frame.shape[0], frame.shape[1])
    span = values.max() - values.min()
    values = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    colour = matplotlib.colormaps["jet"](0.125 + 0.75 * values)[..., :3]  # jet's pure blue to pure red, no dark ends
    blended = (1 - alpha) * frame.astype(np.float64) + alpha * 255 * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) image as PNG."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_url(image: np.ndarray) -> str:
    """`data:image/png;base64,...`: how OpenAI-compatible endpoints take inline images."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
