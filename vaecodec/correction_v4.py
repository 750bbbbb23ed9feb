"""Decoding of format version 4's correction section: pixel corrections, for the files the
vaecodec of session 52 wrote. Writers now use the transform-domain layer of `correction.py`.

Version 4 quantized the pixel error itself in `correction.BASIS`, each symbol coded in a context
of the magnitude of its 16 x 16 block's latent residuals and of the symbols already decoded at
the same pixel (docs/format.md, "Correction section, version 4").
"""

from __future__ import annotations

import struct

import numpy as np

from . import entropy_coding
from .correction import FIXED_BITS, FIXED_COLOUR, context_tables
from .errors import FormatError

# Sum of |latent residual| over a latent position's channels: upper edges of the block classes.
BLOCK_EDGES = np.array([1, 2, 4, 6, 9, 13, 19, 27, 38, 54, 76, 107, 151, 213, 300])
BLOCK_CLASSES = len(BLOCK_EDGES) + 1
PREVIOUS_CLASSES = 3                # |symbols| of the components before, summed: 0, 1, 2 or more
CONTEXTS = BLOCK_CLASSES * PREVIOUS_CLASSES
STRIP = 256                         # rows at a time
_LENGTH = struct.Struct("<I")


def block_classes(latent_residual: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) class of each pixel, uint8: the summed |residual| of its block's
    latents."""
    activity = np.abs(latent_residual[0]).sum(0)
    classes = np.searchsorted(BLOCK_EDGES, activity, side="right").astype(np.uint8)
    return np.repeat(np.repeat(classes, 16, 0), 16, 1)[:height, :width]


def apply_symbols(decoded: np.ndarray, symbols: np.ndarray, step: int) -> np.ndarray:
    """The corrected image, uint8: decoded plus the symbols taken back to RGB, in integer
    arithmetic, clipped to 0..255."""
    out = np.empty_like(decoded)
    for top in range(0, decoded.shape[0], STRIP):
        rows = slice(top, min(decoded.shape[0], top + STRIP))
        rgb = (step * symbols[rows].astype(np.int64)) @ FIXED_COLOUR
        rgb = (rgb + (1 << (FIXED_BITS - 1))) >> FIXED_BITS
        out[rows] = np.clip(decoded[rows].astype(np.int64) + rgb, 0, 255)
    return out


def decode(section: bytes, decoded: np.ndarray, latent_residual: np.ndarray) -> np.ndarray:
    """Apply a version 4 correction section to the decoded image (height, width, 3) uint8.
    Raises FormatError on a section that does not parse or decode."""
    height, width = decoded.shape[:2]
    if len(section) < 1 or section[0] == 0:
        raise FormatError("corrupt .vae file (correction step)")
    step, offset = section[0], 1
    blocks = block_classes(latent_residual, height, width).astype(np.int64)
    symbols = np.zeros((height, width, 3), np.int16)
    previous = np.zeros((height, width), np.int16)
    for component in range(3):
        context = (blocks * PREVIOUS_CLASSES
                   + np.minimum(previous, PREVIOUS_CLASSES - 1)).ravel()
        present = np.flatnonzero(np.bincount(context, minlength=CONTEXTS))
        parameters = np.zeros((CONTEXTS, 2), np.uint8)
        for k in present:
            # Each context that occurs: its sparsity byte, then its decay byte unless it is 0.
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
                                       context_tables(parameters))
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
