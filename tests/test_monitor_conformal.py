"""Conformal bands keep their promise on synthetic exchangeable episodes, and say when there is too little data."""

import numpy as np
import pytest

from monitor.conformal import (
    ConformalBand,
    GaussianBand,
    conformal_rank,
    min_calibration_episodes,
    min_nominal_episodes,
    split_episodes,
)

STEPS, PATCHES = 20, 9


def episode(rng: np.random.Generator, patches: int | None = None, shift: float = 0.0):
    """A nominal-like episode: uneven length, t_min running through memory time, a smooth phase-dependent score
    with a per-episode random level (episodes differ as wholes, as real ones do) and per-frame noise."""
    length = int(rng.integers(15, 30))
    t = np.round(np.linspace(0, STEPS - 1, length) + rng.normal(0, 0.7, length)).clip(0, STEPS - 1).astype(int)
    shape = (length,) if patches is None else (length, patches)
    base = 1.0 + 0.5 * np.sin(t / 3.0)
    base = base if patches is None else base[:, None] * np.linspace(0.5, 1.5, patches)
    values = base + 0.2 * rng.normal() + 0.1 * rng.normal(size=shape)
    if shift:
        values[length // 2 :] += shift
    return t, values


def flagged(band, episodes) -> np.ndarray:
    return np.array([(band.nonconformity(t, v) > band.h).any() for t, v in episodes])


def test_conformal_rank_and_minimum_sizes():
    assert conformal_rank(9, 0.1) == 9 and conformal_rank(19, 0.1) == 18
    assert min_calibration_episodes(0.1) == 9
    assert min_calibration_episodes(0.2) == 4
    assert min_calibration_episodes(0.05) == 19
    n = min_nominal_episodes(0.1, 0.4)
    split_episodes(n, 0.1, 0.4)
    with pytest.raises(ValueError):
        split_episodes(n - 1, 0.1, 0.4)


def test_split_is_a_partition_with_enough_calibration_episodes():
    split = split_episodes(40, 0.1, 0.4, seed=3)
    everything = split.memory + split.centre + split.width
    assert sorted(everything) == list(range(40))
    assert len(split.memory) == 16 and len(split.centre) == 12 and len(split.width) == 12
    assert split_episodes(40, 0.1, 0.4, seed=3) == split != split_episodes(40, 0.1, 0.4, seed=4)


def test_too_few_episodes_says_how_many_are_needed():
    with pytest.raises(ValueError, match=r"10 nominal episodes are too few for alpha=0.1.*at least 28 nominal"):
        split_episodes(10, 0.1, 0.4)
    with pytest.raises(ValueError, match=r"alpha=0.1 needs at least 9 E_B episodes, got 5"):
        rng = np.random.default_rng(0)
        ConformalBand.fit([episode(rng) for _ in range(5)], [episode(rng) for _ in range(5)], STEPS, 0.1)


@pytest.mark.parametrize("patches, patch_fraction", [(None, 0.0), (PATCHES, 0.0), (PATCHES, 0.2)])
def test_false_alarm_rate_of_held_out_nominal_episodes_is_at_most_alpha(patches, patch_fraction):
    """The guarantee is marginal over calibration sets: average over many draws. Conformal coverage is also at
    most 1−α+1/(n+1), so the rate must not collapse to 0 either (the band is not vacuous)."""
    alpha, n, draws, held_out = 0.2, 12, 150, 40
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(draws):
        centre = [episode(rng, patches) for _ in range(n)]
        width = [episode(rng, patches) for _ in range(n)]
        band = ConformalBand.fit(centre, width, STEPS, alpha, patch_fraction=patch_fraction, radius=1)
        rates.append(flagged(band, [episode(rng, patches) for _ in range(held_out)]).mean())
    tolerance = 3 * np.std(rates) / np.sqrt(draws) + 0.01  # three standard errors of the mean
    assert np.mean(rates) <= alpha + tolerance
    assert np.mean(rates) >= alpha - 1 / (n + 1) - tolerance


def test_anomalous_episodes_are_flagged_and_mask_hides_patches():
    rng = np.random.default_rng(1)
    centre = [episode(rng, PATCHES) for _ in range(12)]
    width = [episode(rng, PATCHES) for _ in range(12)]
    band = ConformalBand.fit(centre, width, STEPS, 0.1)
    shifted = [episode(rng, PATCHES, shift=2.0) for _ in range(20)]
    assert flagged(band, shifted).mean() >= 0.9
    # An anomaly confined to patch 0 disappears when patch 0 is masked out.
    t, values = episode(rng, PATCHES)
    values[:, 0] += 5.0
    assert flagged(band, [(t, values)])[0]
    mask = np.ones(PATCHES, dtype=bool)
    mask[0] = False
    masked = ConformalBand.fit(centre, width, STEPS, 0.1, mask=mask)
    assert not masked.is_anomaly(int(t[0]), values[0])


def test_patch_fraction_sets_how_many_patches_must_exceed():
    rng = np.random.default_rng(2)
    centre, width = [episode(rng, PATCHES) for _ in range(10)], [episode(rng, PATCHES) for _ in range(10)]
    band = ConformalBand.fit(centre, width, STEPS, 0.1, patch_fraction=0.25)
    assert band.exceed == 3  # more than 25% of 9 patches = at least 3
    t = 5
    one_patch = band.upper(t) - 0.01
    one_patch[0] += 10.0
    assert not band.is_anomaly(t, one_patch)
    three_patches = band.upper(t) - 0.01
    three_patches[:3] += 10.0
    assert band.is_anomaly(t, three_patches)


def test_round_trip_through_arrays_and_gaussian_baseline():
    rng = np.random.default_rng(3)
    episodes = [episode(rng) for _ in range(20)]
    band = ConformalBand.fit(episodes[:10], episodes[10:], STEPS, 0.1)
    again = ConformalBand.from_arrays(band.arrays())
    np.testing.assert_array_equal(again.upper(4), band.upper(4))
    gaussian = GaussianBand.fit(episodes, STEPS, z=3.0)
    assert gaussian.is_anomaly(4, gaussian.upper(4) + 1e-6) and not gaussian.is_anomaly(4, gaussian.upper(4) - 1e-6)
    assert GaussianBand.from_arrays(gaussian.arrays()).upper(4) == gaussian.upper(4)
