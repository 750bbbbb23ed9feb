"""The hyper-synthesis evaluated exactly, in integer arithmetic (after Ballé et al. 2019,
"Integer networks for data compression with latent-variable models").

The entropy parameters (means and scale indices of y) must come out bit-identical on the encoder
and on every decoder, whatever the thread count, CPU, GPU or float precision of the other
networks. So this network's weights are integers, its activations are fixed-point integers, and
each layer's output is floored back to ACTIVATION_BITS fractional bits. The arithmetic runs in
float64 on integer values whose partial sums stay far below 2^53, where every addition and
product is exact in any order: the result cannot depend on how BLAS blocks or threads the sums.

Tiles of the input give exactly the same output as the whole input (the halo covers the
network's receptive field), which bounds memory on large images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .networks import LOG_SCALE_STEP, SCALE_LEVELS, SCALE_MIN

ACTIVATION_BITS = 8
WEIGHT_BITS = 12
ACTIVATION_LIMIT = float(1 << 22)   # keeps every partial sum below 2^53
HALO = 4                            # z rows of context a tile needs, > receptive field radius
TILE_ROWS = 16


class IntegerHyperSynthesis:
    """Integer version of `networks.hyper_synthesis`: z (integers) -> (means in 1/2^8 units,
    scale indices)."""

    def __init__(self, layers: list[dict]):
        """`layers`: dicts with 'kind' ('conv' or 'deconv'), 'weight', 'bias' (float arrays,
        already holding the folded scale-index transform), 'stride' and 'relu'."""
        self.layers = []
        for layer in layers:
            weight = torch.as_tensor(np.asarray(layer["weight"], np.float64))
            bias = torch.as_tensor(np.asarray(layer["bias"], np.float64))
            self.layers.append({
                "kind": layer["kind"], "stride": layer["stride"], "relu": layer["relu"],
                "weight": torch.round(weight * (1 << WEIGHT_BITS)),
                "bias": torch.round(bias * (1 << (WEIGHT_BITS + ACTIVATION_BITS))),
            })
        self.latent_channels = self.layers[-1]["weight"].shape[0] // 2
        largest = max(layer["weight"].abs().max().item() for layer in self.layers)
        if largest >= 1 << 20:
            raise ValueError("hyper-synthesis weights too large for exact integer evaluation")

    def _run(self, z: torch.Tensor) -> torch.Tensor:
        x = z.to(torch.float64) * (1 << ACTIVATION_BITS)
        for layer in self.layers:
            weight, kernel = layer["weight"], layer["weight"].shape[-1]
            if layer["kind"] == "deconv":
                stride = layer["stride"]
                x = F.conv_transpose2d(x, weight, layer["bias"], stride=stride,
                                       padding=kernel // 2, output_padding=stride - 1)
            else:
                x = F.conv2d(x, weight, layer["bias"], stride=layer["stride"], padding=kernel // 2)
            x = torch.floor(x / (1 << WEIGHT_BITS))
            if layer["relu"]:
                x = x.clamp_min(0)
            x = x.clamp(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
        return x

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z: int array (1, C, h, w). Returns means (int64, units of 2^-8) and scale indices
        (int64 in 0..SCALE_LEVELS-1), each of shape (1, M, 4h, 4w)."""
        z = torch.as_tensor(np.asarray(z, np.int64))
        height = z.shape[2]
        bands = []
        with torch.no_grad():
            for top in range(0, height, TILE_ROWS):
                bottom = min(height, top + TILE_ROWS)
                lo, hi = max(0, top - HALO), min(height, bottom + HALO)
                out = self._run(z[:, :, lo:hi])
                bands.append(out[:, :, 4 * (top - lo):4 * (bottom - lo)])
        out = torch.cat(bands, dim=2).to(torch.int64).numpy()
        m = self.latent_channels
        means = out[:, :m]
        half = 1 << (ACTIVATION_BITS - 1)
        indices = np.clip((out[:, m:] + half) >> ACTIVATION_BITS, 0, SCALE_LEVELS - 1)
        return means, indices


def fold_scale_index(weight: np.ndarray, bias: np.ndarray, latent_channels: int):
    """Rewrite the last layer so its scale outputs are scale-table indices instead of log-scales:
    index = (log_scale - log(SCALE_MIN)) / LOG_SCALE_STEP. `weight` is (out, in, k, k)."""
    weight, bias = weight.astype(np.float64).copy(), bias.astype(np.float64).copy()
    m = latent_channels
    weight[m:] /= LOG_SCALE_STEP
    bias[m:] = (bias[m:] - np.log(SCALE_MIN)) / LOG_SCALE_STEP
    return weight, bias


def scale_table() -> np.ndarray:
    """The standard deviations that scale indices 0..SCALE_LEVELS-1 stand for."""
    return np.exp(np.log(SCALE_MIN) + LOG_SCALE_STEP * np.arange(SCALE_LEVELS))
