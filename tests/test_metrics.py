"""The benchmark's metrics on cases with known answers."""

import math

import numpy as np
import pytest

from vaecodec.metrics import bd_rate, ms_ssim, ms_ssim_db, psnr


def test_psnr_of_known_arrays():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 1, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2))
    c = a.copy()
    c[0, 0, 0] = 16          # MSE = 256 / 48
    assert psnr(a, c) == pytest.approx(10 * math.log10(255**2 * 48 / 256))
    assert psnr(a, a) == math.inf


def test_ms_ssim_of_identical_and_different_images():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)
    assert ms_ssim(image, image) == pytest.approx(1.0)
    noisy = np.clip(image + rng.normal(0, 30, image.shape), 0, 255).astype(np.uint8)
    assert 0 < ms_ssim(image, noisy) < 0.99
    assert ms_ssim_db(0.99) == pytest.approx(20.0)


def test_bd_rate_of_a_curve_against_itself_and_scaled_rates():
    rates = [0.2, 0.4, 0.8, 1.6, 2.4]
    quality = [28.0, 31.0, 34.5, 38.0, 40.0]
    assert bd_rate(rates, quality, rates, quality) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rates, quality, [0.9 * r for r in rates], quality) == pytest.approx(-10.0)
    assert bd_rate(rates, quality, [1.2 * r for r in rates], quality) == pytest.approx(20.0)


def test_bd_rate_without_overlap_is_nan():
    assert math.isnan(bd_rate([0.1, 0.2], [20, 22], [1, 2], [40, 42]))
