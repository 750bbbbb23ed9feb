"""Image quality metrics on 8-bit RGB arrays, as the field reports them."""

from __future__ import annotations

import math

import numpy as np


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all channels, peak 255 (inf for identical arrays)."""
    mse = np.mean((np.asarray(reference, np.float64) - np.asarray(decoded, np.float64)) ** 2)
    return math.inf if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Multi-scale SSIM (Wang et al. 2003) with the standard five scales, via pytorch-msssim.
    Images need a short side of at least 161 pixels."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def tensor(a):
        return torch.from_numpy(np.array(a, np.float32)).permute(2, 0, 1)[None]

    return float(_ms_ssim(tensor(reference), tensor(decoded), data_range=255.0))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the decibel scale the literature plots: -10 log10(1 - MS-SSIM)."""
    return math.inf if value >= 1 else float(-10 * np.log10(1 - value))


def bd_rate(rates_a, quality_a, rates_b, quality_b) -> float:
    """Bjøntegaard delta rate of curve b against curve a, in percent (negative: b needs fewer
    bits for the same quality). Classic method (VCEG-M33): log-rate fitted as a cubic polynomial
    of quality (lower degree when a curve has fewer than four points), both integrated over the
    quality range the curves share. Returns nan when they do not overlap."""
    def fit(rates, quality):
        rates, quality = np.asarray(rates, np.float64), np.asarray(quality, np.float64)
        keep = np.isfinite(rates) & np.isfinite(quality) & (rates > 0)
        rates, quality = rates[keep], quality[keep]
        degree = min(3, len(rates) - 1)
        return np.polyfit(quality, np.log(rates), degree), quality.min(), quality.max()

    poly_a, low_a, high_a = fit(rates_a, quality_a)
    poly_b, low_b, high_b = fit(rates_b, quality_b)
    low, high = max(low_a, low_b), min(high_a, high_b)
    if not high > low:
        return math.nan
    integral_a = np.diff(np.polyval(np.polyint(poly_a), [low, high]))[0]
    integral_b = np.diff(np.polyval(np.polyint(poly_b), [low, high]))[0]
    return float((np.exp((integral_b - integral_a) / (high - low)) - 1) * 100)
