"""The correction layer: the decoded image's error, quantized in pixels and coded after the latents.

At high qualities the transforms, not the quantization of the latents, bound the PSNR: going up
the quality scale spends many bits for little (Kodak, msh96t: quality 7 to 8 costs 0.26 bpp for
0.55 dB). Much of what is left is large errors at a few pixels (edges, fine texture), and a
coarse uniform quantizer on the pixel error x - x_hat corrects those for few bits: most of its
symbols are 0. The error is quantized in an orthonormal opponent basis (the grey axis and two
colour differences): the error at an edge is mostly the same in all three channels, so one
symbol on the grey axis corrects what would take three in RGB (on photos, 20-70% more squared
error removed per bit than quantizing R, G and B), and since the basis is orthonormal a step
costs the same squared error in every direction. The encoder picks the step per image by the
quality's objective, bits + lambda * 255^2 * MSE, counting the section's bytes, or leaves the
layer out when it does not pay (below quality 5 at a lower lambda, below 3 never: see
`decision_lambda`).

Exact decoding: the decoder's image may differ from the encoder's in the last bit on another
machine (the synthesis runs in floating point), so nothing here is computed from pixels. Each
symbol's context comes from integers both sides hold: the magnitude of the latent residuals of
its 16 x 16 block (how much the latents had to say there) and the symbols already decoded at the
same pixel in the components coded before it (grey, then the two differences). Each context's
table is built with integer arithmetic from two bytes the section stores (see `context_table`),
and the symbols go back to pixels in integer fixed point (see `apply_symbols`).
"""

from __future__ import annotations

import struct

import numpy as np

from . import entropy_coding
from .architecture import quality_lambda
from .entropy_coding import FREQUENCY_BITS, TableSet
from .errors import FormatError

STEPS = (72, 60, 50, 42, 35, 29, 24, 20, 17, 14, 12, 10, 8, 7, 6, 5)  # tried coarsest first
# The opponent basis, rows orthonormal: grey (1, 1, 1), red - blue (1, 0, -1), and
# (1, -2, 1); in fixed point, 1/sqrt(3), 1/sqrt(2) and 1/sqrt(6) in units of 2^-12.
BASIS = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]]) / np.sqrt([[3], [2], [6]])
_FIXED_BASIS = np.array([[2365, 2365, 2365], [2896, 0, -2896], [1672, -3344, 1672]], np.int64)
_FIXED_BITS = 12
# Sum of |latent residual| over a latent position's channels: upper edges of the block classes.
BLOCK_EDGES = np.array([1, 2, 4, 6, 9, 13, 19, 27, 38, 54, 76, 107, 151, 213, 300])
BLOCK_CLASSES = len(BLOCK_EDGES) + 1
PREVIOUS_CLASSES = 3                # |symbols| of the components before, summed: 0, 1, 2 or more
CONTEXTS = BLOCK_CLASSES * PREVIOUS_CLASSES
RADIUS = 15                         # a table covers -RADIUS..RADIUS; beyond, the escape
BINS = 2 * RADIUS + 2               # a table's values and its escape
STRIP = 256                         # rows at a time
# A coordinate rounds up only from 0.7 of a step past the lower value, not 0.5: a symbol just
# past the midpoint removes little error for its bits (on 10 held-out photos at qualities 6-8,
# 0.2 lowered bits + lambda * 255^2 * MSE by 4-5% against plain rounding; 0.1 and 0.3 less).
DEADZONE = 0.2
# 2^-1/16 in units of 2^-16: the probability of a nonzero symbol falls by this per step of
# the stored byte, computed by integer multiplication only.
_NONZERO_RATIO = 62757
_LENGTH = struct.Struct("<I")
# Below quality 5 the corrections must pay at a weight of distortion lower than the quality's
# lambda, down to none at quality 3: on photos (session 52), corrections that lowered each
# file's bits + lambda * 255^2 * MSE at qualities 2-3 still put the mean curve 0.1 dB below
# the plain one there, since they remove squared error where it buys the least PSNR.
RAMP = (3.0, 5.0)


def _nonzero_totals() -> np.ndarray:
    totals = [1 << FREQUENCY_BITS]
    for _ in range(254):
        totals.append(totals[-1] * _NONZERO_RATIO >> 16)
    return np.array([0] + totals, np.int64)   # index 1..255; 0 means "all symbols are 0"


NONZERO_TOTAL = _nonzero_totals()


def context_table(sparsity: int, decay: int) -> np.ndarray:
    """Integer frequencies of the values -RADIUS..RADIUS and the escape, for one context.

    A nonzero value has probability 2^-((sparsity - 1) / 16) (sparsity 1..255), split evenly
    between signs; its magnitude k is geometric, falling by decay / 256 per step."""
    nonzero = int(NONZERO_TOTAL[sparsity])
    half = [nonzero * (256 - decay) >> 9]
    for _ in range(RADIUS):
        half.append(half[-1] * decay >> 8)
    tail, half = half[-1], np.maximum(1, np.array(half[:-1], np.int64))
    zero = max(1, (1 << FREQUENCY_BITS) - nonzero)
    escape = max(1, 2 * (tail * 256 // max(1, 256 - decay)))
    return np.concatenate([half[::-1], [zero], half, [escape]])


def decision_lambda(quality: float) -> float:
    """The weight of distortion against bits (lambda, per 255^2 MSE) at which corrections must
    pay at `quality`: the quality's own lambda from RAMP's end, fading to 0 at its start."""
    low, high = RAMP
    return quality_lambda(quality) * min(1.0, max(0.0, (quality - low) / (high - low)))


def block_classes(latent_residual: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) class of each pixel, uint8: the summed |residual| of its block's
    latents."""
    activity = np.abs(latent_residual[0]).sum(0)
    classes = np.searchsorted(BLOCK_EDGES, activity, side="right").astype(np.uint8)
    return np.repeat(np.repeat(classes, 16, 0), 16, 1)[:height, :width]


def histogram(symbols: np.ndarray, context: np.ndarray) -> np.ndarray:
    """(CONTEXTS, BINS) counts of the symbols by context: bins 0..2 RADIUS hold the values
    -RADIUS..RADIUS, the last one every value beyond (the escapes)."""
    bins = np.where(np.abs(symbols) > RADIUS, BINS - 1, symbols + RADIUS)
    return np.bincount(context * BINS + bins, minlength=CONTEXTS * BINS).reshape(CONTEXTS, BINS)


def fit_parameters(counts: np.ndarray) -> np.ndarray:
    """(CONTEXTS, 2) uint8 from a `histogram`: each context's sparsity byte (0: every symbol
    is 0) and decay byte, fitted to its counts (maximum likelihood, then rounded; an escaped
    value counts as RADIUS + 1)."""
    magnitude = np.abs(np.arange(BINS) - RADIUS)
    magnitude[-1] = RADIUS + 1
    total = counts.sum(1)
    nonzero = total - counts[:, RADIUS]
    excess = counts @ np.maximum(magnitude - 1, 0)
    parameters = np.zeros((CONTEXTS, 2), np.uint8)
    used = nonzero > 0
    share = nonzero[used] / total[used]
    parameters[used, 0] = np.clip(np.round(1 - 16 * np.log2(share)), 1, 255)
    mean = excess[used] / nonzero[used]
    parameters[used, 1] = np.clip(np.round(256 * mean / (1 + mean)), 0, 255)
    return parameters


def _tables(parameters: np.ndarray) -> TableSet:
    freqs = [context_table(max(1, int(s)), int(d)) for s, d in parameters]
    starts = np.concatenate([[0], np.cumsum([len(f) for f in freqs])])
    return TableSet(np.concatenate(freqs), starts, np.full(len(freqs), -RADIUS, np.int64))


def _plane_contexts(blocks: np.ndarray, previous: np.ndarray) -> np.ndarray:
    return (blocks.astype(np.int64) * PREVIOUS_CLASSES
            + np.minimum(previous, PREVIOUS_CLASSES - 1)).ravel()


def histogram_bits(counts: np.ndarray) -> float:
    """Bits of one component coded from a `histogram`: its parameter bytes, stream length and
    the symbols under the tables fitted to it (an escape adds its 16 bits)."""
    parameters = fit_parameters(counts)
    present = counts.sum(1) > 0
    coded = parameters[:, 0] > 0
    bits = 8 * (_LENGTH.size + present.sum() + coded.sum())
    for k in np.flatnonzero(coded):
        table = context_table(int(parameters[k, 0]), int(parameters[k, 1]))
        bits += counts[k] @ -np.log2(table / table.sum())
        bits += entropy_coding.ESCAPE_BITS * counts[k, -1]
    return float(bits)


def _strips(height: int):
    """Row ranges of STRIP rows: the encoder's statistics and the decoder's additions go strip
    by strip, so that a large image needs no image-sized arrays of 64-bit numbers."""
    for top in range(0, height, STRIP):
        yield slice(top, min(height, top + STRIP))


def quantize(error: np.ndarray, step: int) -> np.ndarray:
    """Symbols (height, width, 3) of a pixel error (original - decoded): its coordinates in
    BASIS over the step, rounded towards zero by DEADZONE more than to the nearest, as int64."""
    coordinates = error.astype(np.float64) @ BASIS.T / step
    magnitude = np.maximum(0.0, np.floor(np.abs(coordinates) + 0.5 - DEADZONE))
    return (np.sign(coordinates) * magnitude).astype(np.int64)


def apply_symbols(decoded: np.ndarray, symbols: np.ndarray, step: int) -> np.ndarray:
    """The corrected image, uint8: decoded plus the symbols taken back to RGB (step times
    their combination of BASIS, in fixed point, rounded), clipped to 0..255. Integer
    arithmetic only, so every decoder computes the same image from the same input."""
    out = np.empty_like(decoded)
    for rows in _strips(decoded.shape[0]):
        rgb = (step * symbols[rows].astype(np.int64)) @ _FIXED_BASIS
        rgb = (rgb + (1 << (_FIXED_BITS - 1))) >> _FIXED_BITS
        out[rows] = np.clip(decoded[rows].astype(np.int64) + rgb, 0, 255)
    return out


def _symbols(decoded: np.ndarray, original: np.ndarray, step: int) -> np.ndarray:
    """The whole image's symbols at `step`, (height, width, 3) int16."""
    out = np.empty(decoded.shape, np.int16)
    for rows in _strips(decoded.shape[0]):
        out[rows] = quantize(original[rows].astype(np.int64) - decoded[rows], step)
    return out


def choose(decoded: np.ndarray, original: np.ndarray, latent_residual: np.ndarray,
           lam: float) -> tuple[int, np.ndarray] | None:
    """The step that lowers bits + lam * (squared error in 0..255 units) / 3 the most, with its
    symbols (height, width, 3) int16, or None when no step beats no correction. Steps are tried from the coarsest down; the search stops once the cost has
    risen twice in a row (where coarse steps cost more than no correction, finer ones may
    still cost less)."""
    if lam <= 0:
        return None
    height, width = decoded.shape[:2]
    blocks = block_classes(latent_residual, height, width)
    plain = sum(float(((original[rows].astype(np.int64) - decoded[rows]) ** 2).sum())
                for rows in _strips(height))
    best_cost, best_step = lam * plain / 3, None
    last_cost, rises = float("inf"), 0
    for step in STEPS:
        counts = np.zeros((3, CONTEXTS, BINS), np.int64)
        squared = 0.0
        for rows in _strips(height):
            target = original[rows].astype(np.int64)
            symbols = quantize(target - decoded[rows], step)
            squared += float(((target - apply_symbols(decoded[rows], symbols, step)) ** 2).sum())
            previous = np.zeros(symbols.shape[:2], np.int64)
            for component in range(3):
                counts[component] += histogram(symbols[..., component].ravel(),
                                               _plane_contexts(blocks[rows], previous))
                previous += np.abs(symbols[..., component])
        bits = 8.0 + sum(histogram_bits(c) for c in counts)
        cost = bits + lam * squared / 3
        if cost < best_cost:
            best_cost, best_step = cost, step
        rises = rises + 1 if cost >= last_cost else 0
        if rises == 2:
            break
        last_cost = cost
    if best_step is None:
        return None
    return best_step, _symbols(decoded, original, best_step)


def encode(symbols: np.ndarray, step: int, latent_residual: np.ndarray) -> bytes:
    """The correction section: the step, then per component of BASIS the parameter bytes of
    each context that occurs, the length of its stream and the stream (docs/format.md)."""
    height, width = symbols.shape[:2]
    blocks = block_classes(latent_residual, height, width)
    out, previous = [bytes([step])], np.zeros((height, width), np.int16)
    for component in range(3):
        plane = symbols[..., component].ravel()
        context = _plane_contexts(blocks, previous)
        parameters = fit_parameters(histogram(plane.astype(np.int64), context))
        out.append(_parameter_bytes(parameters, context))
        coded = parameters[context, 0] > 0
        stream = entropy_coding.encode(plane[coded], context[coded], _tables(parameters))
        out += [_LENGTH.pack(len(stream)), stream]
        previous += np.abs(symbols[..., component])
    return b"".join(out)


def _parameter_bytes(parameters: np.ndarray, context: np.ndarray) -> bytes:
    out = bytearray()
    for k in np.flatnonzero(np.bincount(context, minlength=CONTEXTS)):
        out.append(int(parameters[k, 0]))
        if parameters[k, 0]:
            out.append(int(parameters[k, 1]))
    return bytes(out)


def decode(section: bytes, decoded: np.ndarray, latent_residual: np.ndarray) -> np.ndarray:
    """Apply a correction section to the decoded image (height, width, 3) uint8. Raises
    FormatError on a section that does not parse or decode."""
    height, width = decoded.shape[:2]
    if len(section) < 1 or section[0] == 0:
        raise FormatError("corrupt .vae file (correction step)")
    step, offset = section[0], 1
    blocks = block_classes(latent_residual, height, width)
    symbols = np.zeros((height, width, 3), np.int16)
    previous = np.zeros((height, width), np.int16)
    for component in range(3):
        context = _plane_contexts(blocks, previous)
        parameters = np.zeros((CONTEXTS, 2), np.uint8)
        for k in np.flatnonzero(np.bincount(context, minlength=CONTEXTS)):
            if offset >= len(section):
                raise FormatError("corrupt .vae file (correction section truncated)")
            parameters[k, 0] = section[offset]
            offset += 1
            if parameters[k, 0]:
                if offset >= len(section):
                    raise FormatError("corrupt .vae file (correction section truncated)")
                parameters[k, 1] = section[offset]
                offset += 1
        if offset + _LENGTH.size > len(section):
            raise FormatError("corrupt .vae file (correction section truncated)")
        (length,) = _LENGTH.unpack_from(section, offset)
        offset += _LENGTH.size
        if length > len(section) - offset:
            raise FormatError("corrupt .vae file (correction stream length)")
        coded = parameters[context, 0] > 0
        values = entropy_coding.decode(section[offset:offset + length], context[coded],
                                       _tables(parameters))
        # No error of 8-bit pixels has a coordinate beyond 255 * sqrt(3) < 448.
        if np.abs(values).max(initial=0) * step > 448 + step:
            raise FormatError("corrupt .vae file (correction out of range)")
        offset += length
        plane = np.zeros(height * width, np.int16)
        plane[coded] = values
        del values, context, coded
        symbols[..., component] = plane.reshape(height, width)
        previous += np.abs(symbols[..., component])
    if offset != len(section):
        raise FormatError("corrupt .vae file (correction section has trailing bytes)")
    return apply_symbols(decoded, symbols, step)
