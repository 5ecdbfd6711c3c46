import numpy as np
import pytest

from policies.augment import _RGB_TO_YIQ, AUGMENTATIONS, ColourJitter, random_crop


def luma(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) @ _RGB_TO_YIQ[0]


@pytest.fixture
def frames():
    return np.random.default_rng(0).integers(0, 256, (6, 20, 20, 3), dtype=np.uint8)


def test_zero_jitter_is_the_identity(frames):
    still = ColourJitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    assert np.array_equal(still(frames, np.random.default_rng(1)), frames)


def test_hue_only_jitter_keeps_luma_and_changes_colour():
    # Mid-grey plus a little colour, so no channel clips at 0 or 255.
    frames = np.random.default_rng(0).integers(100, 156, (6, 20, 20, 3), dtype=np.uint8)
    hue = ColourJitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.25)
    out = hue(frames, np.random.default_rng(1))
    assert np.abs(luma(out) - luma(frames)).max() <= 1.5  # rounding to uint8 only
    assert np.abs(out.astype(int) - frames).mean() > 3


def test_brightness_only_scales_every_channel(frames):
    bright = ColourJitter(brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0)
    dark = (frames // 4).astype(np.uint8)  # headroom: ×1.5 stays below 255
    out = bright(dark, np.random.default_rng(2))
    gains = out.reshape(len(out), -1).astype(float).sum(1) / dark.reshape(len(dark), -1).astype(float).sum(1)
    assert np.all((gains > 0.49) & (gains < 1.51)) and gains.std() > 0.01


def test_jitter_is_seeded_and_keeps_shape_and_dtype(frames):
    jitter = ColourJitter()
    a, b = jitter(frames, np.random.default_rng(3)), jitter(frames, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == frames.shape and np.array_equal(a, b)


@pytest.mark.parametrize("field, value", [("brightness", 1.0), ("saturation", -0.1), ("hue", 0.6)])
def test_out_of_range_widths_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ColourJitter(**{field: value})


def test_crop_is_a_window_of_each_frame(frames):
    crops = random_crop(frames, 12, np.random.default_rng(4))
    assert crops.shape == (6, 12, 12, 3)
    for frame, crop in zip(frames, crops):
        windows = np.lib.stride_tricks.sliding_window_view(frame, (12, 12, 3))[..., 0, :, :, :]
        assert (windows == crop).all(axis=(-3, -2, -1)).any()
    with pytest.raises(ValueError, match="larger than"):
        random_crop(frames, 21, np.random.default_rng(4))


def test_unknown_augmentation_lists_the_valid_ones():
    with pytest.raises(ValueError, match="crop.*colour|colour.*crop"):
        AUGMENTATIONS["color_jitter"]
