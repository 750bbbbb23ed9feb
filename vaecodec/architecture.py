"""The model's architecture as plain data: widths, layer lists, quality levels, scale table.

Both backends read these lists: `networks.py` builds PyTorch modules from them (training, GPU
coding) and `numpy_backend.py` evaluates them with NumPy (CPU coding without importing torch).
Layer i of a list is module i of the matching `nn.Sequential`, so weight names agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# The scale table shared by training and coding: SCALE_LEVELS log-spaced standard deviations.
SCALE_MIN = 0.11
SCALE_MAX = 256.0
SCALE_LEVELS = 64
LOG_SCALE_STEP = math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1)

# One rate-distortion trade-off per integer quality 1..8 (loss = bpp + lambda * 255^2 * MSE),
# each with its own learned gain vectors.
QUALITY_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
MIN_QUALITY = 1.0
MAX_QUALITY = float(len(QUALITY_LAMBDAS))
# The codec's scale reaches further down: qualities from LOWEST_QUALITY to 1 extrapolate the
# log-linear line through levels 1 and 2, two levels' worth per unit, so that quality 0 codes at
# about a quarter of level 1's lambda (about 0.1 bpp on Kodak, against 0.25 at quality 1).
LOWEST_QUALITY = 0.0
EXTRAPOLATED_LEVELS_PER_UNIT = 2


@dataclass(frozen=True)
class ModelConfig:
    """Widths of the networks. N: transform channels, M: latent channels, H: hyper channels.
    `modulated`: the level of per-quality modulation of the transforms, 0 for none (see
    MODULATIONS; True, as earlier files record it, is level 1)."""

    N: int = 96
    M: int = 160
    H: int = 96
    modulated: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# Layers: ("conv" | "deconv", in, out, kernel, stride), ("gdn" | "igdn", channels), ("relu",).
# Convolutions pad by kernel // 2; transposed ones add stride - 1 output padding, so each
# stride-2 layer halves or doubles the size exactly.

def analysis_layers(cfg: ModelConfig) -> list[tuple]:
    """Image (3 channels, values 0..1) to latents y, downsampled 16 times."""
    n, m = cfg.N, cfg.M
    return [("conv", 3, n, 5, 2), ("gdn", n), ("conv", n, n, 5, 2), ("gdn", n),
            ("conv", n, n, 5, 2), ("gdn", n), ("conv", n, m, 5, 2)]


def synthesis_layers(cfg: ModelConfig) -> list[tuple]:
    """Latents back to an image, upsampled 16 times."""
    n, m = cfg.N, cfg.M
    return [("deconv", m, n, 5, 2), ("igdn", n), ("deconv", n, n, 5, 2), ("igdn", n),
            ("deconv", n, n, 5, 2), ("igdn", n), ("deconv", n, 3, 5, 2)]


def hyper_analysis_layers(cfg: ModelConfig) -> list[tuple]:
    """Latents y to hyper-latents z, downsampled 4 more times."""
    m, h = cfg.M, cfg.H
    return [("conv", m, h, 3, 1), ("relu",), ("conv", h, h, 5, 2), ("relu",), ("conv", h, h, 5, 2)]


def hyper_synthesis_layers(cfg: ModelConfig) -> list[tuple]:
    """Hyper-latents z to 2M channels: M means, then M log-scales, for every element of y.
    Only convolutions and ReLUs, so that `integer_net.py` can evaluate it exactly."""
    m, h = cfg.M, cfg.H
    return [("deconv", h, m, 5, 2), ("relu",), ("deconv", m, m * 3 // 2, 5, 2), ("relu",),
            ("conv", m * 3 // 2, 2 * m, 3, 1)]


# Per-quality modulation (models trained with `vaecodec train --modulation`, since session 17):
# one learned log-scale per quality level and channel at some hidden layers of each transform,
# interpolated between levels as the latent gains are. One set of transforms serves every
# quality, and a low quality wants other features than a high one; the scales let each quality
# re-weight them. A scale sits at a convolution's outputs ("out", before the nonlinearity that
# follows) or at its inputs ("in", after the nonlinearity before it). Either way it folds into
# the convolution's weights, so coding runs the plain layer lists with weights folded for its
# quality (`weights.fold_modulation`).
# Level 1 (msh96e, session 17) scales each hidden layer on one side of its GDN; level 2
# (session 18) on both sides, which lets each quality move the GDN's operating point too;
# level 3 (session 19) adds the hyper-analysis's convolutions: h_a reads y after the
# quality's gain, whose magnitude spans a factor of ~20 across qualities, and its last scale
# sets how coarsely each quality quantizes z. h_a runs only in the encoder, so no decoder
# layer changes.
MODULATIONS = {
    0: {},
    1: {"g_a": ((0, "out"), (2, "out"), (4, "out")), "g_s": ((2, "in"), (4, "in"), (6, "in"))},
    2: {"g_a": ((0, "out"), (2, "out"), (4, "out"), (2, "in"), (4, "in"), (6, "in")),
        "g_s": ((2, "in"), (4, "in"), (6, "in"), (0, "out"), (2, "out"), (4, "out"))},
}
MODULATIONS[3] = {**MODULATIONS[2], "h_a": ((0, "out"), (2, "out"), (4, "out"))}
# Level 4 (session 45) scales each GDN's beta too ("beta" at a GDN layer): scales on both sides
# of a GDN move the inputs of its normalization pool, not the constant beside them, and a low
# quality may want its features normalized less than a high one does. It folds into the GDN's
# beta.
MODULATIONS[4] = {**MODULATIONS[3],
                  "g_a": MODULATIONS[3]["g_a"] + ((1, "beta"), (3, "beta"), (5, "beta")),
                  "g_s": MODULATIONS[3]["g_s"] + ((1, "beta"), (3, "beta"), (5, "beta"))}
# Each level extends the one before it: its first scales are the earlier level's.


def modulated_convolutions(cfg: ModelConfig) -> dict[str, tuple[tuple[int, str], ...]]:
    """Per transform, the (layer, side) pairs that `cfg`'s modulation scales (none: {})."""
    return MODULATIONS[int(cfg.modulated)]


def modulation_channels(cfg: ModelConfig, name: str) -> int:
    """The number of channels each scale of transform `name`'s modulation has (its sites all
    have the same)."""
    layers = TRANSFORMS[name](cfg)
    # ("conv", in, out, ...) and ("gdn", channels): a GDN's beta has layers[i][1] channels
    counts = {layers[i][2] if side == "out" else layers[i][1]
              for i, side in MODULATIONS[max(MODULATIONS)][name]}
    assert len(counts) == 1, f"{name}'s modulated layers differ in width"
    return counts.pop()

TRANSFORMS = {"g_a": analysis_layers, "g_s": synthesis_layers, "h_a": hyper_analysis_layers,
              "h_s": hyper_synthesis_layers}


# The checkerboard context model (He et al. 2021, "Checkerboard context model for efficient
# learned image compression"). Latents y are split in two halves: the anchors, coded first with
# the hyperprior's means and scales alone, and the others, whose means and scales are corrected
# from the decoded anchors around them. Like h_s, both networks are convolutions and ReLUs only,
# so that `integer_net.py` evaluates them exactly.

def context_layers(cfg: ModelConfig) -> list[tuple]:
    """Decoded anchors (the others zeroed) to M context features."""
    m = cfg.M
    return [("conv", m, m, 5, 1)]


def entropy_parameter_layers(cfg: ModelConfig) -> list[tuple]:
    """[context features, hyper means, hyper scale indices] (3M) to corrections of the means and
    scale indices (2M), one position at a time."""
    m = cfg.M
    return [("conv", 3 * m, 2 * m, 1, 1), ("relu",), ("conv", 2 * m, 2 * m, 1, 1), ("relu",),
            ("conv", 2 * m, 2 * m, 1, 1)]


CONTEXT_TRANSFORMS = {"context": context_layers, "entropy_parameters": entropy_parameter_layers}


def anchor_mask(height: int, width: int) -> np.ndarray:
    """True at the anchors of a height x width latent grid: where row + column is even."""
    rows, cols = np.indices((height, width))
    return (rows + cols) % 2 == 0


def quality_weights(quality: float) -> tuple[int, float]:
    """The two gain levels a quality lies between: (lower level index, weight of the upper).
    Below MIN_QUALITY the weight is negative: the line through levels 1 and 2, extended."""
    if quality < MIN_QUALITY:
        return 0, EXTRAPOLATED_LEVELS_PER_UNIT * (quality - MIN_QUALITY)
    low = int(min(math.floor(quality), MAX_QUALITY - 1)) - 1
    return low, min(quality - 1 - low, 1.0)


def quality_lambda(quality: float) -> float:
    """The rate-distortion weight of a quality: log-linear between the levels' lambdas, as in
    training."""
    low, weight = quality_weights(quality)
    logs = np.log(QUALITY_LAMBDAS)
    return float(np.exp(logs[low] * (1 - weight) + logs[low + 1] * weight))


def initial_log_gains() -> np.ndarray:
    """Per-quality log gains, (levels, 1): 0.5 log(lambda / geometric-mean lambda), where
    high-rate theory puts them (quantization step ~ 1/sqrt(lambda))."""
    logs = np.log(QUALITY_LAMBDAS)
    return (0.5 * (logs - logs.mean()))[:, None]
