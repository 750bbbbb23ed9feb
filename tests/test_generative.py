"""The VAE's other uses: anomaly maps and sampling."""

import numpy as np

import vaecodec
from vaecodec.anomaly import heat_map


def test_anomaly_map_shapes_and_determinism(crop):
    first = vaecodec.anomaly_map(crop)
    again = vaecodec.anomaly_map(crop)
    for name in ("bits", "error", "score"):
        assert getattr(first, name).shape == crop.shape[:2]
        assert np.array_equal(getattr(first, name), getattr(again, name))
    # the bits map adds up to the coded size of y and z (header and coder overhead aside)
    data = vaecodec.compress(crop)
    coded_bits = 8 * (vaecodec.info(data)["z_bytes"] + vaecodec.info(data)["y_bytes"])
    assert abs(first.bits.sum() - coded_bits) < 0.05 * coded_bits
    assert heat_map(crop, first.score).size == (crop.shape[1], crop.shape[0])


def test_pasted_noise_scores_higher_than_its_surroundings(crop):
    image = crop.copy()
    rng = np.random.default_rng(0)
    image[64:128, 96:160] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    result = vaecodec.anomaly_map(image)
    inside = np.zeros(crop.shape[:2], bool)
    inside[64:128, 96:160] = True
    assert result.score[inside].mean() > result.score[~inside].mean() + 2
    best = result.regions[0]
    assert 64 - 32 <= best["y"] < 128 and 96 - 32 <= best["x"] < 160
    assert result.image_score > vaecodec.anomaly_map(crop).image_score


def test_samples_are_deterministic_for_a_seed():
    first = vaecodec.sample(2, (64, 48), quality=3, seed=7)
    again = vaecodec.sample(2, (64, 48), quality=3, seed=7)
    other = vaecodec.sample(2, (64, 48), quality=3, seed=8)
    assert [im.size for im in first] == [(64, 48)] * 2
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))


def test_interpolation_ends_near_the_inputs(crop):
    a, b = crop[:, :128], crop[:, 128:]
    frames = vaecodec.interpolate(a, b, steps=3)
    assert len(frames) == 3
    ends = [np.asarray(frames[0]).astype(float), np.asarray(frames[-1]).astype(float)]
    assert np.abs(ends[0] - a).mean() < np.abs(ends[0] - b).mean()
    assert np.abs(ends[1] - b).mean() < np.abs(ends[1] - a).mean()
