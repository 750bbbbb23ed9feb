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

from .architecture import LOG_SCALE_STEP, SCALE_LEVELS, SCALE_MIN
from .numpy_backend import conv2d, conv_transpose2d

ACTIVATION_BITS = 8
WEIGHT_BITS = 12
ACTIVATION_LIMIT = float(1 << 22)   # with |weights| < 2^16 and <= 4096 inputs per output,
                                    # every partial sum stays below 2^51
HALO = 4                            # z rows of context a tile needs, > receptive field radius
TILE_ROWS = 16


class IntegerHyperSynthesis:
    """Integer version of the hyper-synthesis: z (integers) -> (means in units of
    2^-ACTIVATION_BITS, scale indices)."""

    def __init__(self, layers: list[dict]):
        """`layers`: dicts with 'kind' ('conv' or 'deconv'), 'weight', 'bias' (float arrays,
        already holding the folded scale-index transform), 'stride' and 'relu'."""
        self.layers = []
        for layer in layers:
            weight = np.round(np.asarray(layer["weight"], np.float64) * (1 << WEIGHT_BITS))
            bias = np.round(np.asarray(layer["bias"], np.float64)
                            * (1 << (WEIGHT_BITS + ACTIVATION_BITS)))
            if np.abs(weight).max() >= 1 << 16 or np.abs(bias).max() >= 1 << 48:
                raise ValueError("hyper-synthesis weights too large for exact integer evaluation")
            self.layers.append({"kind": layer["kind"], "stride": layer["stride"],
                                "relu": layer["relu"], "weight": weight, "bias": bias})
        self.latent_channels = self.layers[-1]["weight"].shape[0] // 2

    def _run(self, z: np.ndarray) -> np.ndarray:
        x = z.astype(np.float64) * (1 << ACTIVATION_BITS)
        for layer in self.layers:
            op = conv_transpose2d if layer["kind"] == "deconv" else conv2d
            x = np.floor(op(x, layer["weight"], layer["bias"], layer["stride"]) / (1 << WEIGHT_BITS))
            if layer["relu"]:
                x = np.maximum(x, 0)
            x = np.clip(x, -ACTIVATION_LIMIT, ACTIVATION_LIMIT)
        return x

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z: int array (1, C, h, w). Returns means (int64, units of 2^-ACTIVATION_BITS) and
        scale indices (int64 in 0..SCALE_LEVELS-1), each of shape (1, M, 4h, 4w)."""
        z = np.asarray(z, np.int64)[0]
        height = z.shape[1]
        bands = []
        for top in range(0, height, TILE_ROWS):
            bottom = min(height, top + TILE_ROWS)
            lo, hi = max(0, top - HALO), min(height, bottom + HALO)
            out = self._run(z[:, lo:hi])
            bands.append(out[:, 4 * (top - lo):4 * (bottom - lo)])
        out = np.concatenate(bands, axis=1).astype(np.int64)[None]
        m = self.latent_channels
        half = 1 << (ACTIVATION_BITS - 1)
        indices = np.clip((out[:, m:] + half) >> ACTIVATION_BITS, 0, SCALE_LEVELS - 1)
        return np.ascontiguousarray(out[:, :m]), indices


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
