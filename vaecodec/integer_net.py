"""The entropy-parameter networks (the hyper-synthesis and the checkerboard context model)
evaluated exactly, in integer arithmetic (after Ballé et al. 2019,
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
CONTEXT_HALO = 2                    # y rows the 5 x 5 context convolution reads on each side
CONTEXT_TILE_ROWS = 64


class IntegerNetwork:
    """Convolutions (and ReLUs) evaluated exactly on fixed-point integers."""

    def __init__(self, layers: list[dict]):
        """`layers`: dicts with 'kind' ('conv' or 'deconv'), 'weight', 'bias' (float arrays),
        'stride' and 'relu'."""
        self.layers = []
        for layer in layers:
            weight = np.round(np.asarray(layer["weight"], np.float64) * (1 << WEIGHT_BITS))
            bias = np.round(np.asarray(layer["bias"], np.float64)
                            * (1 << (WEIGHT_BITS + ACTIVATION_BITS)))
            if np.abs(weight).max() >= 1 << 16 or np.abs(bias).max() >= 1 << 48:
                raise ValueError("integer network weights too large for exact evaluation")
            self.layers.append({"kind": layer["kind"], "stride": layer["stride"],
                                "relu": layer["relu"], "weight": weight, "bias": bias})

    def run(self, x: np.ndarray) -> np.ndarray:
        """x: (C, h, w) integers in units of 2^-ACTIVATION_BITS (any int or float dtype).
        Returns the output in the same units, as float64 holding integers."""
        x = np.asarray(x, np.float64)
        for layer in self.layers:
            op = conv_transpose2d if layer["kind"] == "deconv" else conv2d
            x = np.floor(op(x, layer["weight"], layer["bias"], layer["stride"]) / (1 << WEIGHT_BITS))
            if layer["relu"]:
                x = np.maximum(x, 0)
            x = np.clip(x, -ACTIVATION_LIMIT, ACTIVATION_LIMIT)
        return x


def scale_indices(scale_fixed: np.ndarray) -> np.ndarray:
    """Scale-table indices (int64 in 0..SCALE_LEVELS-1) from fixed-point scale indices."""
    half = 1 << (ACTIVATION_BITS - 1)
    return np.clip((scale_fixed.astype(np.int64) + half) >> ACTIVATION_BITS, 0, SCALE_LEVELS - 1)


class IntegerHyperSynthesis(IntegerNetwork):
    """Integer version of the hyper-synthesis: z (integers) -> (means in units of
    2^-ACTIVATION_BITS, scale indices)."""

    def __init__(self, layers: list[dict]):
        """`layers` as for `IntegerNetwork`, the last already holding the folded scale-index
        transform (see `fold_scale_index`)."""
        super().__init__(layers)
        self.latent_channels = self.layers[-1]["weight"].shape[0] // 2

    def fixed_point(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z: int array (1, C, h, w). Returns means and scale indices, both int64 in units of
        2^-ACTIVATION_BITS (the scale indices before rounding), each (1, M, 4h, 4w)."""
        z = np.asarray(z, np.int64)[0]
        height = z.shape[1]
        bands = []
        for top in range(0, height, TILE_ROWS):
            bottom = min(height, top + TILE_ROWS)
            lo, hi = max(0, top - HALO), min(height, bottom + HALO)
            out = self.run(z[:, lo:hi] * (1 << ACTIVATION_BITS))
            bands.append(out[:, 4 * (top - lo):4 * (bottom - lo)])
        out = np.concatenate(bands, axis=1).astype(np.int64)[None]
        m = self.latent_channels
        return np.ascontiguousarray(out[:, :m]), np.ascontiguousarray(out[:, m:])

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z: int array (1, C, h, w). Returns means (int64, units of 2^-ACTIVATION_BITS) and
        scale indices (int64 in 0..SCALE_LEVELS-1), each of shape (1, M, 4h, 4w)."""
        means, scale_fixed = self.fixed_point(z)
        return means, scale_indices(scale_fixed)


class IntegerCheckerboardContext:
    """Integer version of `networks.CheckerboardContext`: the corrected means and fixed-point
    scale indices of the non-anchor latents, from the decoded anchors.

    Its 5 x 5 convolution reads zeros at every non-anchor, so at a non-anchor (the only places
    its output is used) just the 12 taps at an odd offset can be nonzero: it is evaluated
    there alone, about a quarter of the whole convolution's work, with the same exact sums."""

    def __init__(self, context: list[dict], entropy_parameters: list[dict]):
        self.context = IntegerNetwork(context)
        self.entropy_parameters = IntegerNetwork(entropy_parameters)
        layer = self.context.layers[0]
        if len(self.context.layers) != 1 or layer["stride"] != 1 or layer["relu"]:
            raise ValueError("the context network must be one convolution of stride 1")
        k = layer["weight"].shape[-1]
        self.radius = k // 2
        self.taps = [(i, j) for i in range(k) for j in range(k) if (i + j) % 2]  # odd offsets
        self.weight = np.concatenate([layer["weight"][:, :, i, j] for i, j in self.taps], axis=1)
        self.bias = layer["bias"]

    def features(self, anchors: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The convolution's output at (rows, cols) of `anchors` (C, h, w), which is zero at
        the non-anchors; equal to `self.context.run(anchors)[:, rows, cols]`."""
        r = self.radius
        padded = np.zeros((anchors.shape[0], anchors.shape[1] + 2 * r, anchors.shape[2] + 2 * r))
        padded[:, r:-r, r:-r] = anchors
        gathered = np.concatenate([padded[:, rows + i, cols + j] for i, j in self.taps])
        out = np.floor((self.weight @ gathered + self.bias[:, None]) / (1 << WEIGHT_BITS))
        return np.clip(out, -ACTIVATION_LIMIT, ACTIVATION_LIMIT)

    def __call__(self, y_hat: np.ndarray, means: np.ndarray, scale_fixed: np.ndarray,
                 positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`y_hat`, `means`, `scale_fixed`: (1, M, h, w) int64 in units of 2^-ACTIVATION_BITS
        (only the anchors of `y_hat` are read). `positions`: a boolean (h, w) mask of the
        non-anchors. Returns their corrected means and scale indices, each (M, count), in the
        order of `positions`, in the same units."""
        height = y_hat.shape[2]
        m = means.shape[1]
        # Clipped like any activation, so that the partial sums stay exact whatever a file holds.
        anchors = np.clip(np.where(positions, 0, y_hat[0]), -ACTIVATION_LIMIT, ACTIVATION_LIMIT)
        corrected_means, corrected_scales = [], []
        for top in range(0, height, CONTEXT_TILE_ROWS):
            bottom = min(height, top + CONTEXT_TILE_ROWS)
            lo, hi = max(0, top - CONTEXT_HALO), min(height, bottom + CONTEXT_HALO)
            rows, cols = np.nonzero(positions[top:bottom])
            features = self.features(anchors[:, lo:hi], rows + top - lo, cols)
            band_means = means[0, :, top:bottom][:, rows, cols]
            band_scales = scale_fixed[0, :, top:bottom][:, rows, cols]
            inputs = np.concatenate([features, band_means, band_scales])
            corrections = self.entropy_parameters.run(inputs[:, :, None])[:, :, 0]
            corrected_means.append(band_means + corrections[:m])
            corrected_scales.append(band_scales + corrections[m:])
        return (np.concatenate(corrected_means, axis=1).astype(np.int64),
                np.concatenate(corrected_scales, axis=1).astype(np.int64))


def fold_scale_index(weight: np.ndarray, bias: np.ndarray, latent_channels: int):
    """Rewrite the last layer so its scale outputs are scale-table indices instead of log-scales:
    index = (log_scale - log(SCALE_MIN)) / LOG_SCALE_STEP. `weight` is (out, in, k, k)."""
    weight, bias = weight.astype(np.float64).copy(), bias.astype(np.float64).copy()
    m = latent_channels
    weight[m:] /= LOG_SCALE_STEP
    bias[m:] = (bias[m:] - np.log(SCALE_MIN)) / LOG_SCALE_STEP
    return weight, bias


def unfold_scale_index(weight: np.ndarray, bias: np.ndarray, latent_channels: int):
    """The inverse of `fold_scale_index`: the last layer's scale outputs back in log-scales."""
    weight, bias = weight.astype(np.float64).copy(), bias.astype(np.float64).copy()
    m = latent_channels
    weight[m:] *= LOG_SCALE_STEP
    bias[m:] = bias[m:] * LOG_SCALE_STEP + np.log(SCALE_MIN)
    return weight, bias


def scale_table() -> np.ndarray:
    """The standard deviations that scale indices 0..SCALE_LEVELS-1 stand for."""
    return np.exp(np.log(SCALE_MIN) + LOG_SCALE_STEP * np.arange(SCALE_LEVELS))
