"""Anomaly maps: where an image costs the model unusual bits, or comes back unusually wrong.

A compression VAE spends few bits on what resembles its training data and many on what does
not; its reconstruction error behaves alike. Both are measured per pixel through the real
coding path (the bits are the information content of the coded symbols under the model's
integer tables), normalised within the image, and added into one score map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import codec, imageio
from .entropy_coding import symbol_bits
from .format import DEFAULT_MAX_PIXELS
from .weights import DEFAULT_MODEL, load_model

CELL = 16          # pixels per latent element, each way
REGION = 32        # size of the blocks reported as top regions


@dataclass
class AnomalyResult:
    """Per-pixel maps (H x W float32) and the image's summary."""

    bits: np.ndarray      # bits per pixel the file spends here (y and z, spread evenly)
    error: np.ndarray     # squared reconstruction error, box-smoothed over a latent cell
    score: np.ndarray     # combined anomaly score (robust z-scores of the two, summed)
    image_score: float    # high when some region is unusual: the 99.9th percentile of `score`
    regions: list[dict]   # the highest-scoring blocks: x, y, width, height, score


def box_mean(array: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window centred on each pixel (edges use the part inside)."""
    padded = np.pad(array, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    height, width = array.shape
    half = size // 2
    rows = np.clip(np.arange(height) - half, 0, height), np.clip(np.arange(height) + size - half, 0, height)
    cols = np.clip(np.arange(width) - half, 0, width), np.clip(np.arange(width) + size - half, 0, width)
    total = (padded[rows[1]][:, cols[1]] - padded[rows[0]][:, cols[1]]
             - padded[rows[1]][:, cols[0]] + padded[rows[0]][:, cols[0]])
    count = np.outer(rows[1] - rows[0], cols[1] - cols[0])
    return total / np.maximum(count, 1)


def robust_z(array: np.ndarray) -> np.ndarray:
    median = np.median(array)
    spread = np.median(np.abs(array - median)) * 1.4826 + 1e-9
    return (array - median) / spread


def anomaly_map(image, quality: float = 4.0, model: str = DEFAULT_MODEL,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> AnomalyResult:
    """Bits, error and combined anomaly maps of an image (path, PIL image or uint8 array)."""
    source = imageio.prepare(image, max_pixels)
    quality = codec.check_quality(quality)
    bundle = load_model(model)
    transforms = codec.transforms_for(bundle, "cpu", "float32", None)
    height, width = source.rgb.shape[:2]
    coded = codec.encode_latents(bundle, source.rgb, quality, transforms)
    y_bits = symbol_bits(coded.residual, coded.scale_index, bundle.y_tables)
    y_bits = y_bits.reshape(coded.residual.shape)[0].sum(axis=0) / CELL**2
    z_index = codec.z_table_index(bundle, coded.z.shape, quality)
    z_bits = symbol_bits(coded.z, z_index, bundle.z_tables)
    z_bits = z_bits.reshape(coded.z.shape)[0].sum(axis=0) / (4 * CELL) ** 2
    bits = (np.kron(y_bits, np.ones((CELL, CELL)))
            + np.kron(z_bits, np.ones((4 * CELL, 4 * CELL))))[:height, :width]
    decoded = codec.synthesize(bundle, coded, quality, height, width, transforms)
    squared = ((decoded.astype(np.float64) - source.rgb.astype(np.float64)) ** 2).mean(axis=2)
    error = box_mean(squared, CELL)
    score = robust_z(box_mean(bits, CELL)) + robust_z(error)
    regions = top_regions(score)
    return AnomalyResult(bits.astype(np.float32), error.astype(np.float32),
                         score.astype(np.float32), float(np.percentile(score, 99.9)), regions)


def top_regions(score: np.ndarray, count: int = 5) -> list[dict]:
    """The `count` REGION x REGION blocks with the highest mean score."""
    height, width = score.shape
    blocks = []
    for top in range(0, height, REGION):
        for left in range(0, width, REGION):
            block = score[top:top + REGION, left:left + REGION]
            blocks.append({"x": left, "y": top, "width": block.shape[1],
                           "height": block.shape[0], "score": float(block.mean())})
    return sorted(blocks, key=lambda b: -b["score"])[:count]


def heat_map(image, score: np.ndarray) -> Image.Image:
    """The score over a grey copy of the image: transparent where ordinary, red to yellow
    where anomalous (above two robust standard deviations)."""
    gray = np.asarray(imageio.open_image(image, DEFAULT_MAX_PIXELS).convert("L"), np.float64)
    strength = np.clip((score - 2.0) / 6.0, 0, 1)
    red = gray * (1 - strength) + 255 * strength
    green = gray * (1 - strength) + 255 * strength ** 2
    blue = gray * (1 - strength)
    return Image.fromarray(np.dstack([red, green, blue]).round().astype(np.uint8))
