"""The networks: analysis, synthesis and hyper transforms of the mean-scale hyperprior VAE.

Plain PyTorch only, so that the coding path never imports CompressAI (its import alone costs
seconds). Training wraps these transforms with CompressAI's entropy bottleneck (see `train.py`).

The model is variable-rate: a learned gain vector per quality level scales the latent channels
before quantization (Cui et al. 2021, "Asymmetric gained deep image compression"); fractional
qualities interpolate the gains geometrically between the two neighbouring levels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

# The scale table shared by training and coding: SCALE_LEVELS log-spaced standard deviations.
SCALE_MIN = 0.11
SCALE_MAX = 256.0
SCALE_LEVELS = 64
LOG_SCALE_STEP = math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1)

# One rate-distortion trade-off per integer quality 1..8 (loss = bpp + lambda * 255^2 * MSE).
QUALITY_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
MIN_QUALITY = 1.0
MAX_QUALITY = float(len(QUALITY_LAMBDAS))


@dataclass(frozen=True)
class ModelConfig:
    """Widths of the networks. N: transform channels, M: latent channels, H: hyper channels."""

    N: int = 96
    M: int = 128
    H: int = 96

    def to_dict(self) -> dict:
        return asdict(self)


def lambda_for_quality(quality: torch.Tensor | float) -> torch.Tensor:
    """The rate-distortion weight of a (possibly fractional) quality, log-linear between levels."""
    quality = torch.as_tensor(quality, dtype=torch.float32)
    logs = torch.log(torch.tensor(QUALITY_LAMBDAS))
    low = quality.floor().clamp(MIN_QUALITY, MAX_QUALITY - 1).long() - 1
    frac = (quality - 1 - low.float()).clamp(0, 1)
    return torch.exp(logs[low] * (1 - frac) + logs[low + 1] * frac)


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016); inverse=True gives IGDN.

    Parameters are stored as their effective values and kept in range by `clamp_parameters`
    after each optimizer step, so the shipped weights need no re-parametrization at load.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def clamp_parameters(self) -> None:
        self.beta.data.clamp_(min=1e-4)
        self.gamma.data.clamp_(min=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.gamma.shape[0]
        norm = F.conv2d(x * x, self.gamma.view(c, c, 1, 1), self.beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )


def analysis_transform(cfg: ModelConfig) -> nn.Sequential:
    """Image (3 channels, values 0..1) to latents y, downsampled 16 times."""
    n, m = cfg.N, cfg.M
    return nn.Sequential(
        conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m)
    )


def synthesis_transform(cfg: ModelConfig) -> nn.Sequential:
    """Latents back to an image, upsampled 16 times."""
    n, m = cfg.N, cfg.M
    return nn.Sequential(
        deconv(m, n), GDN(n, True), deconv(n, n), GDN(n, True), deconv(n, n), GDN(n, True),
        deconv(n, 3),
    )


def hyper_analysis(cfg: ModelConfig) -> nn.Sequential:
    """Latents y to hyper-latents z, downsampled 4 more times."""
    m, h = cfg.M, cfg.H
    return nn.Sequential(
        conv(m, h, 3, 1), nn.ReLU(), conv(h, h), nn.ReLU(), conv(h, h)
    )


def hyper_synthesis(cfg: ModelConfig) -> nn.Sequential:
    """Hyper-latents z to 2M channels: M means, then M log-scales, for every element of y.

    Only convolutions and ReLUs, so that `integer_net.py` can evaluate it exactly in integers.
    """
    m, h = cfg.M, cfg.H
    return nn.Sequential(
        deconv(h, m), nn.ReLU(), deconv(m, m * 3 // 2), nn.ReLU(), conv(m * 3 // 2, 2 * m, 3, 1)
    )


class HyperpriorVAE(nn.Module):
    """The four transforms plus the per-quality gain vectors."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.g_a = analysis_transform(cfg)
        self.g_s = synthesis_transform(cfg)
        self.h_a = hyper_analysis(cfg)
        self.h_s = hyper_synthesis(cfg)
        levels = len(QUALITY_LAMBDAS)
        # Stored as logs so interpolation between qualities is linear here.
        self.log_gain = nn.Parameter(torch.zeros(levels, cfg.M))
        self.log_inverse_gain = nn.Parameter(torch.zeros(levels, cfg.M))

    def gains(self, quality: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain and inverse gain, shape (B, M, 1, 1), for one quality or a batch of them."""
        quality = torch.as_tensor(quality, dtype=torch.float32, device=self.log_gain.device)
        quality = quality.reshape(-1)
        low = quality.floor().clamp(MIN_QUALITY, MAX_QUALITY - 1).long() - 1
        frac = (quality - 1 - low.float()).clamp(0, 1)[:, None]

        def interpolate(table: torch.Tensor) -> torch.Tensor:
            mixed = table[low] * (1 - frac) + table[low + 1] * frac
            return torch.exp(mixed)[:, :, None, None]

        return interpolate(self.log_gain), interpolate(self.log_inverse_gain)

    def clamp_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, GDN):
                module.clamp_parameters()


def split_entropy_parameters(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the hyper-synthesis output into means and log-scales."""
    means, log_scales = params.chunk(2, dim=1)
    return means, log_scales
