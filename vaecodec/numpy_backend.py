"""The transforms evaluated with NumPy, so CPU coding never imports torch (whose import alone
costs a user 1.5-2.5 s per command here).

Convolutions are computed tap by tap: for each kernel position, one matrix product of the
weights (out x in) with the correspondingly shifted input (in x pixels), accumulated into the
output. That needs no im2col buffer, and the products go to NumPy's BLAS.
Arrays are (channels, height, width); a single image at a time.
"""

from __future__ import annotations

import numpy as np


def per_tap(weight: np.ndarray, dtype) -> np.ndarray:
    """Contiguous per-tap weight matrices: NumPy hands a matrix product to BLAS only when each
    operand has a unit stride, and a slice weight[:, :, i, j] has none."""
    return np.ascontiguousarray(weight, dtype=dtype)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int) -> np.ndarray:
    """Like torch's conv2d with padding kernel // 2. weight: (out, in, k, k).

    Output pixel o reads padded input stride*o + i for tap i, that is phase i mod stride of the
    input at offset i // stride. So the input is split once into its stride x stride phases,
    each phase is multiplied by all the taps that read it (one matrix product over the whole
    phase, no gathering), and shifted windows of the products are summed."""
    cout, cin, k, _ = weight.shape
    pad = k // 2
    channels, height, width = x.shape
    out_h = (height + 2 * pad - k) // stride + 1
    out_w = (width + 2 * pad - k) // stride + 1
    padded = np.zeros((channels, height + 2 * pad, width + 2 * pad), x.dtype)
    padded[:, pad:pad + height, pad:pad + width] = x
    if cin * k * k <= 256:
        # Few input channels (the first layer): gather all taps once, one matrix product.
        columns = np.stack([padded[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
                            for i in range(k) for j in range(k)], axis=1)
        matrix = per_tap(weight, x.dtype).reshape(cout, cin * k * k)
        out = (matrix @ columns.reshape(cin * k * k, -1)).reshape(cout, out_h, out_w)
        if bias is not None:
            out += bias[:, None, None].astype(x.dtype)
        return out
    taps = per_tap(weight.transpose(2, 3, 0, 1), x.dtype)       # (k, k, out, in)
    out = np.zeros((cout, out_h, out_w), x.dtype)
    for a in range(stride):
        for b in range(stride):
            phase = np.ascontiguousarray(padded[:, a::stride, b::stride])
            rows, cols = phase.shape[1:]
            flat = phase.reshape(cin, -1)
            reading = [(i, j) for i in range(a, k, stride) for j in range(b, k, stride)]
            per_product = max(1, (1 << 24) // max(1, cout * rows * cols))
            for first in range(0, len(reading), per_product):
                group = reading[first:first + per_product]
                stacked = np.concatenate([taps[i, j] for i, j in group])
                products = (stacked @ flat).reshape(len(group), cout, rows, cols)
                for (i, j), product in zip(group, products):
                    d, e = i // stride, j // stride
                    out += product[:, d:d + out_h, e:e + out_w]
    if bias is not None:
        out += bias[:, None, None].astype(x.dtype)
    return out


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                     stride: int) -> np.ndarray:
    """Like torch's conv_transpose2d with padding k // 2 and output padding stride - 1 (the
    output is exactly `stride` times larger). weight: (in, out, k, k).

    Output pixel stride*q + a receives tap i from input q - d, where a = (i - pad) mod stride
    and d = (i - pad - a) / stride. So each output phase (a, b) is accumulated in its own
    contiguous buffer, and the phases are interleaved once at the end."""
    cin, cout, k, _ = weight.shape
    pad = k // 2
    _, height, width = x.shape
    flat = x.reshape(cin, -1)
    taps = per_tap(weight.transpose(2, 3, 1, 0), x.dtype).reshape(k * k * cout, cin)
    phases = np.zeros((stride, stride, cout, height, width), x.dtype)
    # Several taps per matrix product, as many as fit in about 2^24 output values.
    per_product = max(1, min(k * k, (1 << 24) // max(1, cout * height * width)))
    for first in range(0, k * k, per_product):
        last = min(k * k, first + per_product)
        products = (taps[first * cout:last * cout] @ flat).reshape(-1, cout, height, width)
        for n, contribution in enumerate(products, start=first):
            i, j = divmod(n, k)
            a, b = (i - pad) % stride, (j - pad) % stride
            d, e = (i - pad - a) // stride, (j - pad - b) // stride
            q0, q1 = max(0, d), min(height, height + d)
            r0, r1 = max(0, e), min(width, width + e)
            if q0 < q1 and r0 < r1:
                phases[a, b, :, q0:q1, r0:r1] += contribution[:, q0 - d:q1 - d, r0 - e:r1 - e]
    out = np.empty((cout, stride * height, stride * width), x.dtype)
    for a in range(stride):
        for b in range(stride):
            out[:, a::stride, b::stride] = phases[a, b]
    if bias is not None:
        out += bias[:, None, None].astype(x.dtype)
    return out


def gdn(x: np.ndarray, beta: np.ndarray, gamma: np.ndarray, inverse: bool) -> np.ndarray:
    channels = x.shape[0]
    norm = (gamma @ (x * x).reshape(channels, -1)).reshape(x.shape) + beta[:, None, None]
    return x * np.sqrt(norm) if inverse else x / np.sqrt(norm)


def run(layers: list[tuple], params: dict[str, np.ndarray], prefix: str, x: np.ndarray) -> np.ndarray:
    """Evaluate a layer list of `architecture.py` with the weights named `{prefix}.{i}.…`."""
    for i, layer in enumerate(layers):
        kind, name = layer[0], f"{prefix}.{i}"
        if kind == "conv":
            x = conv2d(x, params[f"{name}.weight"], params[f"{name}.bias"], layer[4])
        elif kind == "deconv":
            x = conv_transpose2d(x, params[f"{name}.weight"], params[f"{name}.bias"], layer[4])
        elif kind in ("gdn", "igdn"):
            x = gdn(x, params[f"{name}.beta"], params[f"{name}.gamma"], kind == "igdn")
        elif kind == "relu":
            x = np.maximum(x, 0)
    return x
