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
