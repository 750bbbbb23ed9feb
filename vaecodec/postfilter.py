"""The post-filter: a linear filter that the encoder fits to each image by least squares and
sends in the file, and that the decoder applies to the synthesis' output (in the spirit of the
adaptive loop filter of H.266/VVC). The synthesis makes errors that are partly predictable from
the decoded pixels around them; a filter of 117 integer weights, about 100 bytes, removes part
of them. The encoder sends it only when it lowers the rate-distortion cost of the file.

Each channel's output is its decoded value plus a weighted sum of FEATURES features of the
5 x 5 neighbourhood. All but the constant are zero on a flat area of one colour, so there the
filter can only add an offset, whatever the weights:
- for each of the three channels and each of the 12 point-symmetric pairs of offsets (o, -o),
  x(p + o) + x(p - o) - 2 x(p) (a symmetric filter, as in VVC);
- each other channel's value minus this channel's, at p;
- a constant.
The weights are integers in units of 2^-FRACTION_BITS, below MAX_WEIGHT in magnitude, and the
decoder computes in int32, where no sum can overflow: every decoder makes the same pixels from
the same synthesis output.
"""

from __future__ import annotations

import numpy as np

from .errors import FormatError

RADIUS = 2
OFFSETS = [(i, j) for i in range(-RADIUS, RADIUS + 1) for j in range(-RADIUS, RADIUS + 1)
           if (i, j) > (0, 0)]                      # one offset of each symmetric pair
FEATURES = 3 * len(OFFSETS) + 2 + 1                 # 39 per channel
FRACTION_BITS = 8
# |sum| <= 36 * 2^12 * 1020 + 3 * 2^13 * 255 + 2^12 < 2^28: far inside int32.
MAX_WEIGHT = 1 << 12
MAX_ORDER = 15                                      # Exp-Golomb orders a file may use
BAND_PIXELS = 1 << 18                               # pixels per band: bounds memory
FIT_ROW_STEP = 2                                    # the fit's statistics from every 2nd row
# What `fit` solves on: the differences ordered (offset, channel), the three channel values and
# the constant. Every channel's features are combinations of these rows (`feature_map`).
BASIS = 3 * len(OFFSETS) + 3 + 1


def per_channel_terms(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weights regrouped by what they multiply: (differences (3 in, 12, 3 out),
    channel values (3 in, 3 out), constants (3 out)), int32. Exact: `feature_map` holds 0 and
    +-1 only."""
    per_basis = np.stack([feature_map(c) @ weights[c] for c in range(3)], axis=1)
    per_basis = np.round(per_basis).astype(np.int32)        # (BASIS, 3 out)
    count = 3 * len(OFFSETS)
    differences = per_basis[:count].reshape(len(OFFSETS), 3, 3).transpose(1, 0, 2)
    return differences, per_basis[count:count + 3], per_basis[BASIS - 1]


def bands(image: np.ndarray):
    """(top, bottom, planes) for bands of about BAND_PIXELS pixels of an (H, W, 3) image:
    planes (3, rows + 2 RADIUS, W + 2 RADIUS) int32, edge-replicated at the image's borders."""
    height, width = image.shape[:2]
    step = max(1, BAND_PIXELS // width)
    for top in range(0, height, step):
        bottom = min(height, top + step)
        index = np.clip(np.arange(top - RADIUS, bottom + RADIUS), 0, height - 1)
        planes = image[index].astype(np.int32).transpose(2, 0, 1)
        yield top, bottom, np.pad(planes, ((0, 0), (0, 0), (RADIUS, RADIUS)), mode="edge")


def shifted(planes: np.ndarray, i: int, j: int, rows: slice = slice(None)) -> np.ndarray:
    """The band's interior shifted by (i, j): (3, rows, W)."""
    height, width = planes.shape[1] - 2 * RADIUS, planes.shape[2] - 2 * RADIUS
    return planes[:, RADIUS + i:RADIUS + i + height, RADIUS + j:RADIUS + j + width][:, rows]


def fit(decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
    """The integer weights (3, FEATURES), in units of 2^-FRACTION_BITS, that bring `decoded`
    closest to `original` in squared error (both (H, W, 3) uint8), up to their rounding.
    The least squares use every FIT_ROW_STEP-th row: the same filter for a fraction of the
    work."""
    gram = np.zeros((BASIS, BASIS))
    moment = np.zeros((BASIS, 3))
    rows = slice(None, None, FIT_ROW_STEP)
    for top, bottom, planes in bands(decoded):
        centre = shifted(planes, 0, 0, rows)
        basis = np.concatenate(
            [shifted(planes, i, j, rows) + shifted(planes, -i, -j, rows) - 2 * centre
             for i, j in OFFSETS] + [centre, np.ones_like(centre[:1])]).reshape(BASIS, -1)
        basis = basis.astype(np.float64)
        error = (original[top:bottom][rows].astype(np.float64)
                 - decoded[top:bottom][rows]).reshape(-1, 3)
        gram += basis @ basis.T
        moment += basis @ error
    weights = np.zeros((3, FEATURES), np.int64)
    for c in range(3):
        t = feature_map(c)
        normal = t.T @ gram @ t
        # A little ridge keeps the solution finite where features are all zero or collinear
        # (a grey image has no colour differences).
        ridge = 1e-6 * (np.trace(normal) / FEATURES + 1.0)
        solution = np.linalg.solve(normal + ridge * np.eye(FEATURES), t.T @ moment[:, c])
        weights[c] = np.clip(np.round(solution * (1 << FRACTION_BITS)), 1 - MAX_WEIGHT,
                             MAX_WEIGHT - 1)
    return weights


def feature_map(channel: int) -> np.ndarray:
    """T (BASIS, FEATURES): the features of `channel` are T^T times the basis."""
    pairs, count = len(OFFSETS), 3 * len(OFFSETS)
    t = np.zeros((BASIS, FEATURES))
    for c in range(3):           # the features order the differences (channel, offset)
        for k in range(pairs):
            t[3 * k + c, c * pairs + k] = 1.0
    for n, other in enumerate(c for c in range(3) if c != channel):
        t[count + other, count + n] = 1.0
        t[count + channel, count + n] = -1.0
    t[BASIS - 1, FEATURES - 1] = 1.0
    return t


def apply(decoded: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The filtered image: (H, W, 3) uint8 from the decoded (H, W, 3) uint8: each channel
    plus floor((features . weights + 2^(FRACTION_BITS - 1)) / 2^FRACTION_BITS), clipped."""
    differences, values, constants = per_channel_terms(weights)
    out = np.empty_like(decoded)
    for top, bottom, planes in bands(decoded):
        centre = np.ascontiguousarray(shifted(planes, 0, 0))
        sums = np.empty_like(centre)
        product = np.empty_like(centre[0])
        for o in range(3):
            sums[o] = constants[o] + (1 << (FRACTION_BITS - 1))
            for c in range(3):
                sums[o] += np.multiply(centre[c], values[c, o], out=product)
        difference = np.empty_like(centre)
        for k, (i, j) in enumerate(OFFSETS):
            np.add(shifted(planes, i, j), shifted(planes, -i, -j), out=difference)
            difference -= 2 * centre
            for c in range(3):
                for o in range(3):
                    sums[o] += np.multiply(difference[c], differences[c, k, o], out=product)
        filtered = centre + (sums >> FRACTION_BITS)     # an arithmetic shift is a floor
        out[top:bottom] = np.clip(filtered, 0, 255).transpose(1, 2, 0)
    return out


def squared_error(a: np.ndarray, b: np.ndarray) -> int:
    """Sum of squared differences of two (H, W, 3) uint8 images, band by band."""
    step = max(1, BAND_PIXELS // a.shape[1])
    total = 0
    for top in range(0, a.shape[0], step):
        difference = a[top:top + step].astype(np.int32) - b[top:top + step]
        total += int(np.sum(difference * difference, dtype=np.int64))
    return total


def encode(weights: np.ndarray) -> bytes:
    """The section: per channel, one byte holding an Exp-Golomb order k; then every channel's
    FEATURES weights, zigzag-mapped (0, -1, 1, -2, ... to 0, 1, 2, 3, ...) and written as
    Exp-Golomb codes of that channel's order; bits most significant first, the last byte
    padded with zero bits."""
    mapped = np.where(weights > 0, 2 * weights - 1, -2 * weights)
    orders = [min(range(MAX_ORDER + 1), key=lambda k: sum(_code_length(int(v), k) for v in row))
              for row in mapped]
    bits = "".join(_exp_golomb(int(v), k) for row, k in zip(mapped, orders) for v in row)
    bits += "0" * (-len(bits) % 8)
    return bytes(orders) + int(bits, 2).to_bytes(len(bits) // 8, "big")


def decode(data: bytes) -> np.ndarray:
    """Inverse of `encode`; raises FormatError on anything `encode` cannot have written."""
    if len(data) < 4 or max(data[:3]) > MAX_ORDER:
        raise FormatError("corrupt .vae file (post-filter section)")
    bits = bin(int.from_bytes(data[3:], "big"))[2:].zfill(8 * (len(data) - 3))
    position = 0
    weights = np.zeros((3, FEATURES), np.int64)
    for c, order in enumerate(data[:3]):
        for f in range(FEATURES):
            zeros = len(bits) - position - len(bits[position:].lstrip("0"))
            end = position + 2 * zeros + 1 + order
            if zeros > 24 or end > len(bits):
                raise FormatError("corrupt .vae file (post-filter section)")
            mapped = int(bits[position + zeros:end], 2) - (1 << order)
            weights[c, f] = (mapped + 1) // 2 if mapped % 2 else -(mapped // 2)
            position = end
    if len(bits) - position >= 8 or "1" in bits[position:]:
        raise FormatError("corrupt .vae file (post-filter section)")
    if np.abs(weights).max() >= MAX_WEIGHT:
        raise FormatError("corrupt .vae file (post-filter weights out of range)")
    return weights


def _exp_golomb(value: int, order: int) -> str:
    code = value + (1 << order)
    return "0" * (code.bit_length() - 1 - order) + format(code, "b")


def _code_length(value: int, order: int) -> int:
    return 2 * (value + (1 << order)).bit_length() - 1 - order
