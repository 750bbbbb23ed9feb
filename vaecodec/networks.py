"""The networks in PyTorch: the transforms of the mean-scale hyperprior VAE, built from the
layer lists in `architecture.py`. Used for training and for coding on a GPU; CPU coding runs the
same weights through `numpy_backend.py`.

The model is variable-rate: a learned gain vector per quality level scales the latent channels
before quantization (Cui et al. 2021, "Asymmetric gained deep image compression"); fractional
qualities interpolate the log gains linearly between the two neighbouring levels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .architecture import (
    CONTEXT_TRANSFORMS, EXTRAPOLATED_LEVELS_PER_UNIT, LOG_SCALE_STEP, MAX_QUALITY, MIN_QUALITY,
    QUALITY_LAMBDAS, SCALE_LEVELS, SCALE_MAX, SCALE_MIN, TRANSFORMS,
    ModelConfig, anchor_mask, initial_log_gains, modulated_convolutions, modulation_channels,
)

__all__ = ["GDN", "HyperpriorVAE", "CheckerboardContext", "ModelConfig", "build",
           "lambda_for_quality", "split_entropy_parameters", "gaussian_likelihood",
           "LOG_SCALE_STEP", "SCALE_LEVELS", "SCALE_MAX", "SCALE_MIN", "MIN_QUALITY",
           "MAX_QUALITY", "QUALITY_LAMBDAS"]


def quality_weights(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`architecture.quality_weights` for a batch of qualities: the lower level index of each
    and the weight of the level above (negative below MIN_QUALITY, where the line through
    levels 1 and 2 is extended, as the codec does)."""
    low = quality.floor().clamp(MIN_QUALITY, MAX_QUALITY - 1).long() - 1
    inside = (quality - 1 - low.to(quality.dtype)).clamp(0, 1)
    below = EXTRAPOLATED_LEVELS_PER_UNIT * (quality - MIN_QUALITY)
    return low, torch.where(quality < MIN_QUALITY, below, inside)


def lambda_for_quality(quality: torch.Tensor | float) -> torch.Tensor:
    """The rate-distortion weight of (a batch of) qualities, log-linear between levels and
    extended below MIN_QUALITY as `architecture.quality_lambda` is."""
    quality = torch.as_tensor(quality, dtype=torch.float32)
    logs = torch.log(torch.tensor(QUALITY_LAMBDAS))
    low, weight = quality_weights(quality)
    return torch.exp(logs[low] * (1 - weight) + logs[low + 1] * weight)


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

    def forward(self, x: torch.Tensor, beta_scale: torch.Tensor | None = None) -> torch.Tensor:
        """`beta_scale` (B, C, 1, 1), if given: a per-image factor on beta (the per-quality
        modulation of level 4)."""
        c = self.gamma.shape[0]
        if beta_scale is None:
            norm = F.conv2d(x * x, self.gamma.view(c, c, 1, 1), self.beta)
        else:
            norm = (F.conv2d(x * x, self.gamma.view(c, c, 1, 1))
                    + (self.beta[:, None, None] * beta_scale).to(x.dtype))
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def build(layers: list[tuple]) -> nn.Sequential:
    """PyTorch modules for a layer list of `architecture.py`."""
    modules = []
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            _, cin, cout, kernel, stride = layer
            modules.append(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2))
        elif kind == "deconv":
            _, cin, cout, kernel, stride = layer
            modules.append(nn.ConvTranspose2d(cin, cout, kernel, stride=stride,
                                              padding=kernel // 2, output_padding=stride - 1))
        elif kind in ("gdn", "igdn"):
            modules.append(GDN(layer[1], inverse=kind == "igdn"))
        elif kind == "relu":
            modules.append(nn.ReLU())
        else:
            raise ValueError(f"unknown layer kind {kind}")
    return nn.Sequential(*modules)


def interpolate_levels(table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """A per-level table (..., levels, C) at a batch of qualities: (..., B, C), linear between
    the two neighbouring levels (extended below MIN_QUALITY), as the codec interpolates."""
    low, frac = quality_weights(quality.reshape(-1))
    frac = frac[:, None]
    return table[..., low, :] * (1 - frac) + table[..., low + 1, :] * frac


class HyperpriorVAE(nn.Module):
    """The four transforms plus the per-quality gain vectors (and, for a modulated model, the
    per-quality scales of `modulated_convolutions`)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        for name, layers in TRANSFORMS.items():
            setattr(self, name, build(layers(cfg)))
        # Stored as logs so interpolation between qualities is linear; see initial_log_gains.
        start = torch.tensor(initial_log_gains(), dtype=torch.float32).expand(-1, cfg.M)
        self.log_gain = nn.Parameter(start.clone())
        self.log_inverse_gain = nn.Parameter(-start.clone())
        self.modulation = modulated_convolutions(cfg)
        if self.modulation:
            # Zero: every quality starts with the plain transforms.
            self.log_modulation = nn.ParameterDict({
                name: nn.Parameter(torch.zeros(len(sites), len(QUALITY_LAMBDAS),
                                         modulation_channels(cfg, name)))
                for name, sites in self.modulation.items()})

    def transform(self, name: str, x: torch.Tensor, quality: torch.Tensor,
                  layers: range | None = None) -> torch.Tensor:
        """Layers `layers` (default: all) of transform `name` at a batch of qualities, with the
        per-quality modulation of a modulated model at its convolutions' inputs or outputs
        and its GDNs' betas."""
        sequence = getattr(self, name)
        scales = {}
        if name in self.modulation:
            quality = torch.as_tensor(quality, dtype=torch.float32, device=x.device)
            logs = interpolate_levels(self.log_modulation[name], quality)
            scales = {site: torch.exp(log)[:, :, None, None]
                      for site, log in zip(self.modulation[name], logs)}
        for i in range(len(sequence)) if layers is None else layers:
            if (i, "in") in scales:
                x = x * scales[i, "in"].to(x.dtype)
            if (i, "beta") in scales:
                x = sequence[i](x, beta_scale=scales[i, "beta"])
            else:
                x = sequence[i](x)
            if (i, "out") in scales:
                x = x * scales[i, "out"].to(x.dtype)
        return x

    def gains(self, quality: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain and inverse gain, shape (B, M, 1, 1), for one quality or a batch of them, as
        `ModelBundle.gains` gives them to the codec."""
        quality = torch.as_tensor(quality, dtype=torch.float32, device=self.log_gain.device)
        return tuple(torch.exp(interpolate_levels(table, quality))[:, :, None, None]
                     for table in (self.log_gain, self.log_inverse_gain))

    def clamp_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, GDN):
                module.clamp_parameters()


class CheckerboardContext(nn.Module):
    """The checkerboard context model (see `architecture.py`): corrections to the hyperprior's
    means and scale indices of the non-anchor latents, from the decoded anchors around them.

    The last layer starts at zero, so an untrained context model codes exactly as the
    hyperprior alone, and training can only start from there."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        for name, layers in CONTEXT_TRANSFORMS.items():
            setattr(self, name, build(layers(cfg)))
        nn.init.zeros_(self.entropy_parameters[-1].weight)
        nn.init.zeros_(self.entropy_parameters[-1].bias)

    def forward(self, y_hat: torch.Tensor, means: torch.Tensor,
                scale_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`y_hat`: decoded latents, of which only the anchors are read; `means` and the
        continuous `scale_index` (log-scale steps above SCALE_MIN): the hyperprior's. Returns
        means and scale indices that are corrected at the non-anchors and the hyperprior's at
        the anchors."""
        anchors, others = self._positions(*y_hat.shape[-2:], y_hat.device)
        features = self.context(y_hat * anchors)
        # Only the non-anchors go through the network, gathered by a fixed index: a boolean
        # mask would make a GPU wait for its count (a host sync every step).
        inputs = torch.cat([features, means, scale_index], dim=1).flatten(2)
        corrections = self.entropy_parameters(inputs.index_select(2, others)[..., None])[..., 0]
        mean_corrections, scale_corrections = corrections.chunk(2, dim=1)
        means = means.flatten(2).index_add(2, others, mean_corrections).view_as(means)
        scale_index = scale_index.flatten(2).index_add(2, others, scale_corrections)
        return means, scale_index.view_as(means)

    def _positions(self, height: int, width: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The anchor mask as a float tensor and the flat indices of the non-anchors, kept
        per size and device so that a training step copies nothing to the device."""
        key = (height, width, str(device))
        cache = self.__dict__.setdefault("_position_cache", {})
        if key not in cache:
            anchors = anchor_mask(height, width)
            cache[key] = (torch.from_numpy(anchors.astype(np.float32)).to(device),
                          torch.from_numpy(np.flatnonzero(~anchors)).to(device))
        return cache[key]


def split_entropy_parameters(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the hyper-synthesis output into means and log-scales."""
    means, log_scales = params.chunk(2, dim=1)
    return means, log_scales


def gaussian_likelihood(y: torch.Tensor, means: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Probability of the unit interval around y under N(mean, scale), evaluated on the tail
    that keeps float precision."""
    distance = (y - means).abs()
    upper = torch.special.ndtr((0.5 - distance) / scales)
    lower = torch.special.ndtr((-0.5 - distance) / scales)
    return (upper - lower).clamp_min(1e-9)
