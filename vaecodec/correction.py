"""The correction layer: the decoded image's error, transform-coded after the latents.

At high qualities the transforms, not the quantization of the latents, bound the PSNR: going up
the quality scale spends many bits for little (Kodak, msh96t: quality 7 to 8 costs 0.26 bpp for
0.55 dB). What the synthesis leaves out there is mostly edges and fine texture, and a classical
transform coder of the error x - x_hat (after the post-filter) buys that back for fewer bits.
The error is taken into an orthonormal opponent basis (the grey axis and two colour
differences: an edge's error is mostly the same in all three channels, so one grey coefficient
corrects what would take three in RGB), then each component into 8 x 8 blocks of the DCT, whose
coefficients a uniform quantizer with a dead zone turns into mostly zeros. Both transforms are
orthonormal, so a step costs the same squared error everywhere. On held-out training photos
the DCT blocks lowered bits + lambda * 255^2 * MSE by 4-6% at quality 6 and 11-14% at quality 8
against the same quantizer on pixels (format version 4's layer, `correction_v4.py`; the lower
figures with the blocks shifted off the photos' JPEG grid).

The encoder picks the step per image by the quality's objective, bits + lambda * 255^2 * MSE,
or leaves the layer out when it does not pay (below quality 5 at a lower lambda, below 3 never:
see `decision_lambda`).

Coding: component by component, and within one in passes over FREQUENCY_CLASS (coefficients
grouped by u + v, the lowest first), all in one range-coded stream. A coefficient's context is
the activity around its block (the nonzero symbols in the lower classes of this component, the
block's own counted twice, its four neighbours' once) and the magnitude of the symbols at the
same coefficient in the components before. Each pass's contexts carry two bytes the encoder
fitted (see `context_table`), coded in the stream ahead of the pass.

Exact decoding: the decoder's image may differ from the encoder's in the last bit on another
machine (the synthesis runs in floating point), so nothing here is computed from pixels: the
contexts come from symbols only, the tables from the stored bytes by integer arithmetic, and
the symbols go back to pixels through both transforms in integer fixed point (`apply_symbols`).
"""

from __future__ import annotations

import struct

import numpy as np

from .architecture import quality_lambda
from .entropy_coding import FREQUENCY_BITS, StreamDecoder, StreamEncoder, TableSet
from .errors import FormatError

# The section stores the step in sixteenths: fine enough that the step follows the quality's
# lambda smoothly, and with it the file's size (see `choose`).
STEP_UNIT = 16
# The step that minimizes bits + lambda * 255^2 * MSE is close to this over sqrt(lambda) (on
# held-out photos at qualities 5-8, within 0.84-1.3 times it): the search starts there and
# moves in ratios of SEARCH_RATIO.
STEP_TIMES_ROOT_LAMBDA = 5.7
SEARCH_RATIO = 2 ** (1 / 8)
# The opponent basis, rows orthonormal: grey (1, 1, 1), red - blue (1, 0, -1), and
# (1, -2, 1); in fixed point, 1/sqrt(3), 1/sqrt(2) and 1/sqrt(6) in units of 2^-12.
BASIS = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]]) / np.sqrt([[3], [2], [6]])
FIXED_COLOUR = np.array([[2365, 2365, 2365], [2896, 0, -2896], [1672, -3344, 1672]], np.int64)
FIXED_BITS = 12
# The orthonormal 8-point DCT-II (row u: frequency u) in units of 2^-12, written out so that
# every decoder uses the same integers.
FIXED_DCT = np.array([
    [1448, 1448, 1448, 1448, 1448, 1448, 1448, 1448],
    [2009, 1703, 1138, 400, -400, -1138, -1703, -2009],
    [1892, 784, -784, -1892, -1892, -784, 784, 1892],
    [1703, -400, -2009, -1138, 1138, 2009, 400, -1703],
    [1448, -1448, -1448, 1448, 1448, -1448, -1448, 1448],
    [1138, -2009, 400, 1703, -1703, -400, 2009, -1138],
    [784, -1892, 1892, -784, -784, 1892, -1892, 784],
    [400, -1138, 1703, -2009, 2009, -1703, 1138, -400]], np.int64)
BLOCK = 8
# Coefficient k = 8 u + v of a block (u vertical, v horizontal frequency) is in the class of
# its diagonal u + v: {0}, {1}, {2}, {3, 4}, {5, 6, 7}, {8, 9, 10}, {11, .., 14}.
FREQUENCY_CLASS = np.searchsorted([1, 2, 3, 5, 8, 11],
                                  np.add.outer(np.arange(BLOCK), np.arange(BLOCK)).ravel(),
                                  side="right")
FREQUENCY_CLASSES = 7
CLASS_POSITIONS = [np.flatnonzero(FREQUENCY_CLASS == f) for f in range(FREQUENCY_CLASSES)]
# Twice the block's nonzero symbols in the lower classes plus its four neighbours': upper
# edges of the activity classes.
ACTIVITY_EDGES = np.array([1, 2, 4, 7, 11, 16, 24, 35])
PREVIOUS_CLASSES = 3                # |symbols| of the components before, summed: 0, 1, 2 or more
CONTEXTS = (len(ACTIVITY_EDGES) + 1) * PREVIOUS_CLASSES
RADIUS = 15                         # a table covers -RADIUS..RADIUS; beyond, the escape
BINS = 2 * RADIUS + 2               # a table's values and its escape
STRIP_BLOCKS = 32                   # block rows at a time (256 pixel rows)
# A coefficient rounds up only from 0.7 of a step past the lower value, not 0.5: a symbol just
# past the midpoint removes little error for its bits (0.2 lowered bits + lambda * 255^2 * MSE
# on held-out photos at qualities 6-8 against plain rounding and against 0.3, in pixels and
# in DCT blocks alike).
DEADZONE = 0.2
# 2^-1/16 in units of 2^-16: the probability of a nonzero symbol falls by this per step of
# the stored byte, computed by integer multiplication only.
_NONZERO_RATIO = 62757
# Below quality 5 the corrections must pay at a weight of distortion lower than the quality's
# lambda, down to none at quality 3: on photos (session 52), corrections that lowered each
# file's bits + lambda * 255^2 * MSE at qualities 2-3 still put the mean curve 0.1 dB below
# the plain one there, since they remove squared error where it buys the least PSNR.
RAMP = (3.0, 5.0)
_STEP = struct.Struct("<H")
# No coefficient of an 8 x 8 block of 8-bit errors exceeds 8 * 255 * sqrt(3) < 3584.
_LARGEST_COEFFICIENT = 3584


def _nonzero_totals() -> np.ndarray:
    totals = [1 << FREQUENCY_BITS]
    for _ in range(254):
        totals.append(totals[-1] * _NONZERO_RATIO >> 16)
    return np.array([0] + totals, np.int64)   # index 1..255; 0 means "all symbols are 0"


NONZERO_TOTAL = _nonzero_totals()


def context_table(sparsity: int, decay: int) -> np.ndarray:
    """Integer frequencies of the values -RADIUS..RADIUS and the escape, for one context.

    A nonzero value has probability 2^-((sparsity - 1) / 16) (sparsity 1..255), split evenly
    between signs; its magnitude k is geometric, falling by decay / 256 per step. (Format
    version 4 uses the same tables: change them only with a new version.)"""
    nonzero = int(NONZERO_TOTAL[sparsity])
    half = [nonzero * (256 - decay) >> 9]
    for _ in range(RADIUS):
        half.append(half[-1] * decay >> 8)
    tail, half = half[-1], np.maximum(1, np.array(half[:-1], np.int64))
    zero = max(1, (1 << FREQUENCY_BITS) - nonzero)
    escape = max(1, 2 * (tail * 256 // max(1, 256 - decay)))
    return np.concatenate([half[::-1], [zero], half, [escape]])


def context_tables(parameters: np.ndarray) -> TableSet:
    """The tables of (contexts, 2) parameter bytes (sparsity, decay), one per context."""
    freqs = [context_table(max(1, int(s)), int(d)) for s, d in parameters]
    starts = np.concatenate([[0], np.cumsum([len(f) for f in freqs])])
    return TableSet(np.concatenate(freqs), starts, np.full(len(freqs), -RADIUS, np.int64))


def decision_lambda(quality: float) -> float:
    """The weight of distortion against bits (lambda, per 255^2 MSE) at which corrections must
    pay at `quality`: the quality's own lambda from RAMP's end, fading to 0 at its start."""
    low, high = RAMP
    return quality_lambda(quality) * min(1.0, max(0.0, (quality - low) / (high - low)))


def histogram(values: np.ndarray, context: np.ndarray) -> np.ndarray:
    """(CONTEXTS, BINS) counts of the values by context: bins 0..2 RADIUS hold -RADIUS..RADIUS,
    the last one every value beyond (the escapes)."""
    values = values.astype(np.int64)
    bins = np.where(np.abs(values) > RADIUS, BINS - 1, values + RADIUS)
    return np.bincount(context * BINS + bins, minlength=CONTEXTS * BINS).reshape(CONTEXTS, BINS)


def fit_parameters(counts: np.ndarray) -> np.ndarray:
    """(contexts, 2) uint8 from a `histogram`: each context's sparsity byte (0: every symbol
    is 0) and decay byte, fitted to its counts (maximum likelihood, then rounded; an escaped
    value counts as RADIUS + 1)."""
    magnitude = np.abs(np.arange(BINS) - RADIUS)
    magnitude[-1] = RADIUS + 1
    total = counts.sum(1)
    nonzero = total - counts[:, RADIUS]
    excess = counts @ np.maximum(magnitude - 1, 0)
    parameters = np.zeros((len(counts), 2), np.uint8)
    used = nonzero > 0
    share = nonzero[used] / total[used]
    parameters[used, 0] = np.clip(np.round(1 - 16 * np.log2(share)), 1, 255)
    mean = excess[used] / nonzero[used]
    parameters[used, 1] = np.clip(np.round(256 * mean / (1 + mean)), 0, 255)
    return parameters


def histogram_bits(counts: np.ndarray) -> float:
    """Bits of one pass coded from its `histogram`: the parameter bytes and the symbols under
    the tables fitted to them (an escape adds its 16 bits)."""
    parameters = fit_parameters(counts)
    coded = parameters[:, 0] > 0
    bits = 8 * ((counts.sum(1) > 0).sum() + coded.sum())
    for k in np.flatnonzero(coded):
        table = context_table(int(parameters[k, 0]), int(parameters[k, 1]))
        bits += counts[k] @ -np.log2(table / table.sum())
        bits += 16 * counts[k, -1]
    return float(bits)


def _strips(blocks_high: int):
    for top in range(0, blocks_high, STRIP_BLOCKS):
        yield slice(top, min(blocks_high, top + STRIP_BLOCKS))


def transform(error: np.ndarray) -> np.ndarray:
    """The DCT coefficients (3, blocks high, blocks wide, 64) float32 of a pixel error
    (height, width, 3) in BASIS; the error is extended to whole blocks by repeating its last
    row and column (the decoder crops what lies outside the image)."""
    height, width = error.shape[:2]
    high, wide = -(-height // BLOCK), -(-width // BLOCK)
    out = np.empty((3, high, wide, BLOCK * BLOCK), np.float32)
    dct = FIXED_DCT / (1 << FIXED_BITS)
    for rows in _strips(high):
        pixels = error[rows.start * BLOCK:rows.stop * BLOCK].astype(np.float32)
        pixels = np.pad(pixels, ((0, (rows.stop - rows.start) * BLOCK - len(pixels)),
                                 (0, wide * BLOCK - width), (0, 0)), mode="edge")
        opponent = pixels @ BASIS.T.astype(np.float32)
        blocks = opponent.reshape(-1, BLOCK, wide, BLOCK, 3).transpose(4, 0, 2, 1, 3)
        out[:, rows] = (dct @ blocks @ dct.T).reshape(3, -1, wide, BLOCK * BLOCK)
    return out


def quantize(coefficients: np.ndarray, step: float) -> np.ndarray:
    """Symbols (int16, the shape of `coefficients`): each over the step, rounded towards zero
    by DEADZONE more than to the nearest."""
    out = np.empty(coefficients.shape, np.int16)
    for rows in _strips(coefficients.shape[1]):
        scaled = coefficients[:, rows] / np.float32(step)
        out[:, rows] = np.sign(scaled) * np.maximum(0, np.floor(np.abs(scaled) + 0.5 - DEADZONE))
    return out


def apply_symbols(decoded: np.ndarray, symbols: np.ndarray, step: float) -> np.ndarray:
    """The corrected image, uint8: decoded plus the symbols taken back through the inverse DCT
    and BASIS (step times their combination, in fixed point, rounded), clipped to 0..255.
    Integer arithmetic only, so every decoder computes the same image from the same input;
    `step` is a whole number of sixteenths (STEP_UNIT)."""
    height, width = decoded.shape[:2]
    sixteenths = round(step * STEP_UNIT)
    wide = symbols.shape[2]
    out = np.empty_like(decoded)
    for rows in _strips(symbols.shape[1]):
        blocks = symbols[:, rows].astype(np.int64).reshape(3, -1, wide, BLOCK, BLOCK)
        pixels = FIXED_DCT.T @ blocks @ FIXED_DCT              # units of 2^-24 steps
        pixels = (pixels + (1 << (FIXED_BITS - 1))) >> FIXED_BITS
        pixels = pixels.transpose(1, 3, 2, 4, 0).reshape(-1, wide * BLOCK, 3)
        rgb = (sixteenths * pixels) @ FIXED_COLOUR              # units of 2^-28
        rgb = (rgb + (1 << (2 * FIXED_BITS + 3))) >> (2 * FIXED_BITS + 4)
        top, bottom = rows.start * BLOCK, min(height, rows.stop * BLOCK)
        out[top:bottom] = np.clip(decoded[top:bottom].astype(np.int64)
                                  + rgb[:bottom - top, :width], 0, 255)
    return out


def _contexts(lower: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The contexts (blocks high, blocks wide, k) of a pass, from `lower`, each block's nonzero
    symbols in the component's lower classes, and `previous`, the summed |symbols| of the
    components before at the pass's k coefficients."""
    ring = np.pad(lower, 1)
    activity = 2 * lower + ring[:-2, 1:-1] + ring[2:, 1:-1] + ring[1:-1, :-2] + ring[1:-1, 2:]
    classes = np.searchsorted(ACTIVITY_EDGES, activity, side="right")
    return classes[:, :, None] * PREVIOUS_CLASSES + np.minimum(previous, PREVIOUS_CLASSES - 1)


def passes(symbols: np.ndarray):
    """(values, contexts) of each pass over `symbols` (3, blocks high, blocks wide, 64), in
    coding order, both flat."""
    previous = np.zeros(symbols.shape[1:], np.int16)
    for component in symbols:
        lower = np.zeros(symbols.shape[1:3], np.int64)
        for positions in CLASS_POSITIONS:
            values = component[:, :, positions]
            yield values.ravel(), _contexts(lower, previous[:, :, positions]).ravel()
            lower += np.count_nonzero(values, axis=2)
        previous += np.abs(component)


def choose(decoded: np.ndarray, original: np.ndarray, lam: float
           ) -> tuple[float, np.ndarray] | None:
    """The step that lowers bits + lam * (squared error in 0..255 units) / 3 the most, with its
    symbols (3, blocks high, blocks wide, 64) int16, or None when no step beats no correction.
    The squared error is counted on the coefficients (the transforms are orthonormal). The
    search starts at STEP_TIMES_ROOT_LAMBDA / sqrt(lam), walks in ratios of SEARCH_RATIO the
    way the cost falls until it rises, then takes the vertex of the parabola (in log step)
    through the lowest point and its two neighbours: the cost is close to convex there, and a
    step that moves smoothly with lam makes sizes that do too (which rate control needs)."""
    if lam <= 0:
        return None
    coefficients = transform(original.astype(np.int16) - decoded)
    strips = list(_strips(coefficients.shape[1]))
    plain = sum(float(np.square(coefficients[:, rows], dtype=np.float64).sum())
                for rows in strips)
    costs = {}

    def cost(sixteenths: int) -> float:
        if sixteenths not in costs:
            step = sixteenths / STEP_UNIT
            symbols = quantize(coefficients, step)
            squared = sum(float(np.square(coefficients[:, rows] - step * symbols[:, rows],
                                          dtype=np.float64).sum()) for rows in strips)
            bits = 16 + 32 + sum(histogram_bits(histogram(values, context))
                                 for values, context in passes(symbols))
            costs[sixteenths] = bits + lam * squared / 3
        return costs[sixteenths]

    start = np.log(STEP_TIMES_ROOT_LAMBDA / np.sqrt(lam) * STEP_UNIT)

    def at(point: float) -> int:
        """The step, in sixteenths, `point` search ratios from the start."""
        return int(np.clip(round(np.exp(start + point * np.log(SEARCH_RATIO))), STEP_UNIT,
                           255 * STEP_UNIT))

    best = 0
    for direction in (1, -1):
        while at(best + direction) != at(best) and cost(at(best + direction)) < cost(at(best)):
            best += direction
    below, middle, above = (cost(at(best + k)) for k in (-1, 0, 1))
    curvature = below - 2 * middle + above
    vertex = at(best + (0.5 * (below - above) / curvature if curvature > 0 else 0.0))
    chosen = vertex if cost(vertex) <= middle else at(best)
    if cost(chosen) >= lam * plain / 3:
        return None
    return chosen / STEP_UNIT, quantize(coefficients, chosen / STEP_UNIT)


def encode(symbols: np.ndarray, step: float) -> bytes:
    """The correction section: the step in sixteenths (2 bytes), then one stream holding, pass
    by pass, the sparsity bytes of the contexts that occur, the decay bytes of those not all
    0, and the symbols of the contexts not all 0 (docs/format.md)."""
    stream = StreamEncoder()
    for values, context in passes(symbols):
        parameters = fit_parameters(histogram(values, context))
        present = np.flatnonzero(np.bincount(context, minlength=CONTEXTS))
        stream.add_bytes(parameters[present, 0].tobytes())
        coded_contexts = present[parameters[present, 0] > 0]
        stream.add_bytes(parameters[coded_contexts, 1].tobytes())
        coded = parameters[context, 0] > 0
        stream.add(values[coded], context[coded], context_tables(parameters))
    return _STEP.pack(round(step * STEP_UNIT)) + stream.finish()


def decode(section: bytes, decoded: np.ndarray) -> np.ndarray:
    """Apply a correction section to the decoded image (height, width, 3) uint8. Raises
    FormatError on a section that does not parse or decode."""
    if len(section) < _STEP.size or _STEP.unpack_from(section)[0] == 0:
        raise FormatError("corrupt .vae file (correction step)")
    step = _STEP.unpack_from(section)[0] / STEP_UNIT
    stream = StreamDecoder(section[_STEP.size:])
    high, wide = -(-decoded.shape[0] // BLOCK), -(-decoded.shape[1] // BLOCK)
    symbols = np.zeros((3, high, wide, BLOCK * BLOCK), np.int16)
    previous = np.zeros(symbols.shape[1:], np.int16)
    for component in symbols:
        lower = np.zeros((high, wide), np.int64)
        for positions in CLASS_POSITIONS:
            context = _contexts(lower, previous[:, :, positions]).ravel()
            present = np.flatnonzero(np.bincount(context, minlength=CONTEXTS))
            parameters = np.zeros((CONTEXTS, 2), np.uint8)
            parameters[present, 0] = np.frombuffer(stream.take_bytes(present.size), np.uint8)
            coded_contexts = present[parameters[present, 0] > 0]
            parameters[coded_contexts, 1] = np.frombuffer(
                stream.take_bytes(coded_contexts.size), np.uint8)
            coded = parameters[context, 0] > 0
            values = np.zeros(context.size, np.int64)
            values[coded] = stream.take(context[coded], context_tables(parameters))
            if np.abs(values).max(initial=0) * step > _LARGEST_COEFFICIENT + step:
                raise FormatError("corrupt .vae file (correction out of range)")
            component[:, :, positions] = values.reshape(high, wide, -1)
            lower += np.count_nonzero(component[:, :, positions], axis=2)
        previous += np.abs(component)
    return apply_symbols(decoded, symbols, step)
