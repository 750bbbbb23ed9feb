"""Generating images from the model's prior, and interpolating between real images' latents.

Sampling follows the generative model exactly as the codec defines it: z from the factorized
integer tables, then y's integer residuals from the Gaussian tables whose means and scales the
integer hyper-synthesis predicts from z (under a context model, the anchors first, then the
others given them), then the synthesis transform. A compression model's prior describes local
statistics, so samples look like textures, not objects.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import codec, imageio
from .architecture import anchor_mask
from .codec import Coded
from .entropy_coding import TableSet
from .errors import InputError
from .format import DEFAULT_MAX_PIXELS
from .integer_net import scale_indices
from .weights import DEFAULT_MODEL, load_model


def sample_tables(rng: np.random.Generator, table_index: np.ndarray, tables: TableSet) -> np.ndarray:
    """One value per position from the table it names (escapes excluded)."""
    values = np.empty(table_index.size, np.int64)
    flat = table_index.ravel()
    for k in np.unique(flat):
        positions = np.flatnonzero(flat == k)
        freqs = tables.table(k)[:-1].astype(np.float64)
        values[positions] = rng.choice(len(freqs), size=positions.size, p=freqs / freqs.sum())
        values[positions] += tables.lows[k]
    return values.reshape(table_index.shape)


def sample(count: int = 8, size: tuple[int, int] = (256, 256), quality: float = 4.0,
           seed: int = 0, model: str = DEFAULT_MODEL) -> list[Image.Image]:
    """`count` images of `size` (width, height) drawn from the prior; the same seed gives the
    same images."""
    width, height = size
    if count < 1 or width < 1 or height < 1 or width * height > DEFAULT_MAX_PIXELS:
        raise InputError("sample count and size must be positive (and within the pixel limit)")
    quality = codec.check_quality(quality)
    bundle = load_model(model)
    transforms = codec.transforms_for(bundle, "cpu", "float32", None)
    rng = np.random.default_rng(seed)
    z_shape, _ = codec.latent_shapes(bundle, height, width)
    images = []
    for _ in range(count):
        z = sample_tables(rng, codec.z_table_index(bundle, z_shape, quality), bundle.z_tables)
        means, scale_fixed = bundle.hyper.fixed_point(z)
        scale_index = scale_indices(scale_fixed)
        residual = sample_tables(rng, scale_index, bundle.y_tables)
        if bundle.context is not None:   # the others are drawn again, given the anchors
            means, scale_index = codec.context_parameters(bundle, residual, means, scale_fixed)
            others = ~anchor_mask(*residual.shape[-2:])
            residual[0][:, others] = sample_tables(rng, scale_index[0][:, others], bundle.y_tables)
        coded = Coded(z=z, residual=residual, means=means, scale_index=scale_index)
        rgb = codec.synthesize(bundle, coded, quality, height, width, transforms)
        images.append(Image.fromarray(rgb))
    return images


def interpolate(first, second, steps: int = 8, quality: float = 4.0,
                model: str = DEFAULT_MODEL) -> list[Image.Image]:
    """`steps` images along the straight line between two images' latents (the second image
    is resized to the first's size)."""
    if steps < 2:
        raise InputError("interpolation needs at least 2 steps")
    quality = codec.check_quality(quality)
    a = imageio.prepare(first, DEFAULT_MAX_PIXELS).rgb
    b_image = Image.fromarray(imageio.prepare(second, DEFAULT_MAX_PIXELS).rgb)
    b = np.asarray(b_image.resize((a.shape[1], a.shape[0]), Image.LANCZOS))
    bundle = load_model(model)
    transforms = codec.transforms_for(bundle, "cpu", "float32", None)
    y_a = codec.analyze(bundle, a, quality, transforms)
    y_b = codec.analyze(bundle, b, quality, transforms)
    gain, inverse_gain = bundle.gains(quality)
    height, width = a.shape[:2]
    images = []
    for t in np.linspace(0.0, 1.0, steps):
        y = np.round(((1 - t) * y_a + t * y_b) * gain[:, None, None])
        y_hat = y * inverse_gain[:, None, None]
        x_hat = transforms("g_s", y_hat, quality)[:, :height, :width]
        rgb = np.round(np.clip(x_hat, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
        images.append(Image.fromarray(np.ascontiguousarray(rgb)))
    return images


def grid(images: list[Image.Image], columns: int = 4) -> Image.Image:
    """Tile images of one size into a grid."""
    width, height = images[0].size
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * width, rows * height), "white")
    for i, image in enumerate(images):
        canvas.paste(image, ((i % columns) * width, (i // columns) * height))
    return canvas

