"""The codec: ties the networks, the exact entropy-parameter network, the entropy coder and the
file format into `compress` and `decompress`.

Encoding: x -> g_a -> y * gain -> h_a -> z, rounded and coded under the factorized tables; the
integer hyper-synthesis turns z into means (fixed point) and scale indices; y is coded as the
integer residual round(y - mean) under the Gaussian table of its scale index.
Decoding repeats the integer hyper-synthesis on the decoded z, so it recovers exactly the same
means and indices, adds the means back, and runs g_s. Only the last step is floating point, and
it cannot disturb the symbols.
With a checkerboard context model, y is coded in two passes: the anchors as above, then the
others under means and scale indices that the integer context network corrects from the decoded
anchors (see `architecture.py`).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from . import correction as correction_layer, correction_v4, entropy_coding, imageio
from . import format as vae_format
from .errors import FormatError, InputError, ModelMismatchError
from .architecture import LOWEST_QUALITY, MAX_QUALITY, anchor_mask, quality_lambda
from .integer_net import ACTIVATION_BITS, scale_indices
from .postfilter import apply as apply_filter, decode as decode_filter, encode as encode_filter
from .postfilter import fit as fit_filter, squared_error
from .weights import DEFAULT_MODEL, ModelBundle, load_model

PAD = 64                   # y is 1/16 and z 1/64 of the image size
TILE = 512                 # pixels per tile side for the float networks
HALO = 64                  # pixels of context around each tile (> the receptive field radius)
# The latent at row (column) r changes g_s's output from row 16r - 30 to 16r + 30: four
# transposed convolutions of kernel 5 and stride 2 reach 2 + 4 + 8 + 16 pixels.
SYNTHESIS_REACH = 30
EDGE_BLUR = 17             # pixels averaged into each pixel of the padding (about one latent)
DEFAULT_QUALITY = 4.0
PRECISIONS = ("float32", "float64")
MEAN_UNIT = float(1 << ACTIVATION_BITS)   # means are integers in units of 1/MEAN_UNIT


@dataclass
class Coded:
    """Everything `encode_latents` and `read` agree on, for tests and tools."""

    z: np.ndarray            # int64 (1, H, h, w)
    residual: np.ndarray     # int64 (1, M, 4h, 4w)
    means: np.ndarray        # int64, units of 1/MEAN_UNIT
    scale_index: np.ndarray  # int64


class NumpyTransforms:
    """The float transforms on the CPU with NumPy (the default: no torch import). A call names
    the transform and, for g_a and g_s, the quality (which a modulated model's weights depend
    on)."""

    def __init__(self, bundle: ModelBundle, dtype):
        self.bundle = bundle
        self.np_dtype = np.dtype(dtype)

    def __call__(self, name: str, x: np.ndarray, quality: float | None = None) -> np.ndarray:
        from . import numpy_backend
        from .architecture import TRANSFORMS

        layers = TRANSFORMS[name](self.bundle.config)
        params = self.bundle.params_for(modulation_quality(self.bundle, name, quality),
                                        self.np_dtype)
        return numpy_backend.run(layers, params, name, x.astype(self.np_dtype, copy=False))


class TorchTransforms:
    """The same transforms with PyTorch, on a CPU or a GPU."""

    def __init__(self, bundle: ModelBundle, device: str, dtype):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.np_dtype = np.dtype(dtype)
        self.dtype = getattr(torch, self.np_dtype.name)
        self.bundle = bundle

    def __call__(self, name: str, x: np.ndarray, quality: float | None = None) -> np.ndarray:
        torch = self.torch
        vae = self.bundle.torch_model(modulation_quality(self.bundle, name, quality))
        vae = vae.to(self.device, self.dtype)
        with torch.no_grad():
            tensor = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)[None]
            return getattr(vae, name)(tensor)[0].cpu().numpy()


def modulation_quality(bundle: ModelBundle, name: str, quality: float | None) -> float | None:
    """The quality whose weights transform `name` runs with: None for the transforms that no
    modulation touches (h_a below level 3, or any of a model without modulation), which serve
    every quality."""
    from .architecture import modulated_convolutions

    if name not in modulated_convolutions(bundle.config):
        return None
    if quality is None:
        raise ValueError(f"model '{bundle.model_id}' is modulated: its {name} needs a quality")
    return quality


def transforms_for(bundle: ModelBundle, device: str, precision: str, backend: str | None):
    """NumPy on the CPU unless a GPU or the torch backend is asked for."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (use {' or '.join(PRECISIONS)})")
    if device not in ("cpu", "cuda", "auto"):
        raise InputError(f"unknown device '{device}' (use cpu, cuda or auto)")
    if backend not in (None, "numpy", "torch"):
        raise InputError(f"unknown backend '{backend}' (use numpy or torch)")
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    if device == "cuda":
        if not cuda_available():
            raise InputError("--device cuda asked for, but PyTorch with a CUDA device is not "
                             "available")
        return TorchTransforms(bundle, "cuda", precision)
    if backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise InputError("the torch backend needs PyTorch: pip install 'vaecodec[torch]'") from None
        return TorchTransforms(bundle, "cpu", precision)
    return NumpyTransforms(bundle, np.dtype(precision))


def cuda_available() -> bool:
    """Whether PyTorch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def check_quality(quality: float) -> float:
    """A quality from LOWEST_QUALITY to MAX_QUALITY, rounded to the header's hundredths, or
    InputError."""
    scale = f"{LOWEST_QUALITY:g} to {MAX_QUALITY:g}"
    try:
        quality = float(quality)
    except (TypeError, ValueError):
        raise InputError(f"quality must be a number from {scale}, not {quality!r}") from None
    if not LOWEST_QUALITY <= quality <= MAX_QUALITY:
        raise InputError(f"quality must be from {scale}, not {quality}")
    return round(quality * 100) / 100      # the header stores hundredths


def check_tile(tile: int) -> int:
    if not isinstance(tile, int) or tile < PAD or tile % PAD:
        raise InputError(f"tile must be a multiple of {PAD} pixels, not {tile!r}")
    return tile


def tiled(function, x: np.ndarray, scale: float, tile: int, halo: int) -> np.ndarray:
    """Apply a convolutional `function` to (C, H, W) tile by tile with `halo` of context (in
    input units) around each tile; `scale` is output size / input size. Equal to one call on the
    whole input up to float rounding, because the halo covers the receptive field."""
    height, width = x.shape[-2:]
    if height <= tile + 2 * halo and width <= tile + 2 * halo:
        return function(x)
    rows = []
    for top in range(0, height, tile):
        row = []
        for left in range(0, width, tile):
            bottom, right = min(height, top + tile), min(width, left + tile)
            t, l = max(0, top - halo), max(0, left - halo)
            b, r = min(height, bottom + halo), min(width, right + halo)
            out = function(x[:, t:b, l:r])
            row.append(out[:, int((top - t) * scale):int((bottom - t) * scale),
                           int((left - l) * scale):int((right - l) * scale)])
        rows.append(np.concatenate(row, axis=2))
    return np.concatenate(rows, axis=1)


def box_blur(line: np.ndarray, size: int) -> np.ndarray:
    """The mean of `size` neighbours along the first axis of `line`, its ends repeated."""
    half = size // 2
    ends = np.concatenate([np.repeat(line[:1], half + 1, 0), line, np.repeat(line[-1:], half, 0)])
    sums = np.cumsum(ends, axis=0)
    return (sums[size:] - sums[:-size]) / size


def padded_image(rgb: np.ndarray, dtype) -> np.ndarray:
    """(3, H', W') in 0..1, padded to multiples of PAD. The padding, which the decoder crops
    away, repeats a blurred copy of the last EDGE_BLUR rows (then columns) instead of the
    last row itself: a repeated row of detail is a stripe pattern that costs bits, a smooth
    one costs next to none (session 51: 2.4% of the bits of photos of 512 pixels, for
    0.01-0.04 dB near their edges)."""
    height, width = rgb.shape[:2]
    padded = np.empty((height + -height % PAD, width + -width % PAD, 3), np.float64)
    padded[:height, :width] = rgb
    if height < padded.shape[0]:
        edge = padded[max(0, height - EDGE_BLUR):height, :width].mean(0)
        padded[height:, :width] = box_blur(edge, EDGE_BLUR)
    if width < padded.shape[1]:
        edge = padded[:, max(0, width - EDGE_BLUR):width].mean(1)
        padded[:, width:] = box_blur(edge, EDGE_BLUR)[:, None]
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=dtype) / dtype(255)


def analyze(bundle: ModelBundle, rgb: np.ndarray, quality: float, transforms,
            tile: int = TILE) -> np.ndarray:
    """The analysis transform: latents y (M, H/16, W/16) before the quality's gain. Only a
    modulated model's depend on the quality."""
    x = padded_image(rgb, transforms.np_dtype.type)
    return tiled(lambda t: transforms("g_a", t, quality), x, 1 / 16, tile, HALO)


def quantize(bundle: ModelBundle, y: np.ndarray, quality: float, transforms,
             size: tuple[int, int] | None = None) -> Coded:
    """Gain, hyper-analysis and rounding at one quality: the integer symbols a file stores.
    Given the image's (height, width), the residuals of latents that no pixel of it depends
    on (see `unseen_latents`) are 0, the cheapest symbol."""
    gain, _ = bundle.gains(quality)
    y = y * gain.astype(y.dtype)[:, None, None]
    z = transforms("h_a", y, quality)
    z = np.clip(np.round(z), entropy_coding.VALUE_MIN, entropy_coding.VALUE_MAX).astype(np.int64)
    means, scale_fixed = bundle.hyper.fixed_point(z[None])
    y = y.astype(np.float64)
    residual = rounded_residual(y[None], means)
    unseen = None if size is None else unseen_latents(*size, residual.shape)
    if unseen is not None:
        residual[0][:, unseen] = 0
    if bundle.context is None:
        return Coded(z=z[None], residual=residual, means=means,
                     scale_index=scale_indices(scale_fixed))
    # The anchors' residuals are final; the others are rounded again around corrected means.
    means, scale_index = context_parameters(bundle, residual, means, scale_fixed)
    others = ~anchor_mask(*residual.shape[-2:])
    residual[0][:, others] = rounded_residual(y[:, others], means[0][:, others])
    if unseen is not None:
        residual[0][:, unseen] = 0
    return Coded(z=z[None], residual=residual, means=means, scale_index=scale_index)


def unseen_latents(height: int, width: int, y_shape: tuple) -> np.ndarray:
    """(h, w) boolean mask of the latents, among those of a padded image of `height` x
    `width` pixels, whose values change none of its pixels in g_s's output: those more than
    SYNTHESIS_REACH pixels past its last row or column (only the padding depends on them)."""
    rows, cols = y_shape[-2:]
    first_row = -(-(height + SYNTHESIS_REACH) // 16)
    first_col = -(-(width + SYNTHESIS_REACH) // 16)
    return (np.arange(rows)[:, None] >= first_row) | (np.arange(cols)[None, :] >= first_col)


def rounded_residual(y: np.ndarray, means: np.ndarray) -> np.ndarray:
    """round(y - mean), within the coder's range, as int64; `means` in units of 1/MEAN_UNIT."""
    residual = np.round(y - means / MEAN_UNIT)
    return np.clip(residual, entropy_coding.VALUE_MIN, entropy_coding.VALUE_MAX).astype(np.int64)


def context_parameters(bundle: ModelBundle, residual: np.ndarray, means: np.ndarray,
                       scale_fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means and scale indices of every latent under a checkerboard context model: the
    hyperprior's at the anchors, corrected from the anchors' decoded values at the others.
    Only the anchors of `residual` are read."""
    others = ~anchor_mask(*residual.shape[-2:])
    y_hat = residual * int(MEAN_UNIT) + means
    corrected_means, corrected_scales = bundle.context(y_hat, means, scale_fixed, others)
    means, scale_fixed = means.copy(), scale_fixed.copy()
    means[0][:, others] = corrected_means
    scale_fixed[0][:, others] = corrected_scales
    return means, scale_indices(scale_fixed)


def encode_y(bundle: ModelBundle, coded: Coded) -> bytes:
    """The y section. With a context model: the length of the anchors' stream (4 bytes, little
    endian), that stream, then the others' stream, which a decoder reads only once it has the
    anchors."""
    tables = bundle.y_tables
    if bundle.context is None:
        return entropy_coding.encode(coded.residual, coded.scale_index, tables)
    anchors = anchor_mask(*coded.residual.shape[-2:])
    first, second = (entropy_coding.encode(coded.residual[0][:, part],
                                           coded.scale_index[0][:, part], tables)
                     for part in (anchors, ~anchors))
    return struct.pack("<I", len(first)) + first + second


def decode_y(bundle: ModelBundle, data: bytes, z: np.ndarray, y_shape: tuple) -> Coded:
    """Inverse of `encode_y`, given the decoded z."""
    tables = bundle.y_tables
    means, scale_fixed = bundle.hyper.fixed_point(z)
    scale_index = scale_indices(scale_fixed)
    if bundle.context is None:
        residual = entropy_coding.decode(data, scale_index, tables).reshape(y_shape)
        return Coded(z=z, residual=residual, means=means, scale_index=scale_index)
    first = struct.unpack_from("<I", data)[0] if len(data) >= 4 else None
    if first is None or first > len(data) - 4:
        raise FormatError("corrupt .vae file (y section layout)")
    split = 4 + first
    anchors = anchor_mask(*y_shape[-2:])
    residual = np.zeros(y_shape, np.int64)
    residual[0][:, anchors] = entropy_coding.decode(
        data[4:split], scale_index[0][:, anchors], tables).reshape(y_shape[1], -1)
    means, scale_index = context_parameters(bundle, residual, means, scale_fixed)
    residual[0][:, ~anchors] = entropy_coding.decode(
        data[split:], scale_index[0][:, ~anchors], tables).reshape(y_shape[1], -1)
    return Coded(z=z, residual=residual, means=means, scale_index=scale_index)


def encode_latents(bundle: ModelBundle, rgb: np.ndarray, quality: float, transforms,
                   tile: int = TILE) -> Coded:
    """Analysis and quantization in one step."""
    return quantize(bundle, analyze(bundle, rgb, quality, transforms, tile), quality, transforms,
                    rgb.shape[:2])


def refine(bundle: ModelBundle, coded: Coded, y: np.ndarray, rgb: np.ndarray, quality: float,
           effort: int, transforms) -> Coded:
    """The symbols of encoder effort `effort` (see `refine.py`): `coded` with refined
    residuals. `compress` keeps them only if their file is no larger and no worse in PSNR."""
    from .refine import EFFORT_STEPS, refine_residual

    height, width = rgb.shape[:2]
    gain, _ = bundle.gains(quality)
    device = str(getattr(transforms, "device", "cpu"))
    # A context model's anchors stay: the others' means and scales were computed from them.
    frozen = None if bundle.context is None else anchor_mask(*y.shape[-2:])
    residual = refine_residual(bundle, padded_image(rgb, np.float32), height, width,
                               y * gain.astype(y.dtype)[:, None, None], coded.means,
                               coded.scale_index, quality, EFFORT_STEPS[effort], device, frozen)
    residual[0][:, unseen_latents(height, width, residual.shape)] = 0
    return replace(coded, residual=residual)


def filter_section(decoded: np.ndarray, original: np.ndarray, quality: float
                   ) -> tuple[bytes, np.ndarray]:
    """The post-filter section for `decoded` (see `postfilter.py`) and the image a decoder
    then shows. The filter goes in only when it lowers the objective the model was trained
    on, bits + lambda * 255^2 * MSE, counting its own bytes; otherwise (b"", decoded)."""
    weights = fit_filter(decoded, original)
    section = encode_filter(weights)
    if len(section) > vae_format.MAX_FILTER_BYTES:
        return b"", decoded
    filtered = apply_filter(decoded, weights)
    saved = quality_lambda(quality) * (squared_error(decoded, original)
                                       - squared_error(filtered, original)) / 3
    return (section, filtered) if saved > 8 * len(section) else (b"", decoded)


# With corrections on, the latents are coded at no more than this quality: above it the
# correction layer buys PSNR for fewer bits than the latents do (held-out photos, session 53:
# at qualities 6-8, latents at 4-5 under the quality's corrections lowered bits + lambda *
# 255^2 * MSE by 1.4-5.3% against latents at the quality itself, and 4.5 came within 0.1% of
# the best of 4, 4.25, 4.5, 5 and 5.5 at qualities 5-8).
LATENT_QUALITY_CAP = 4.5


def latent_quality(quality: float, correction: bool = True) -> float:
    """The quality a file of `quality` codes its latents at: at most LATENT_QUALITY_CAP with
    corrections on (`correction`), else `quality` itself."""
    return min(quality, LATENT_QUALITY_CAP) if correction else quality


def correction_section(decoded: np.ndarray, original: np.ndarray, quality: float
                       ) -> tuple[bytes, np.ndarray]:
    """The correction section for `decoded` (see `correction.py`) and the image a decoder then
    shows, or (b"", decoded) where no correction lowers bits + lambda * 255^2 * MSE (the
    lambda of `correction.decision_lambda`)."""
    chosen = correction_layer.choose(decoded, original,
                                     correction_layer.decision_lambda(quality))
    if chosen is None:
        return b"", decoded
    step, symbols = chosen
    return (correction_layer.encode(symbols, step),
            correction_layer.apply_symbols(decoded, symbols, step))


def synthesize(bundle: ModelBundle, coded: Coded, quality: float, height: int, width: int,
               transforms, tile: int = TILE) -> np.ndarray:
    """The decoder's image from the symbols: (height, width, 3) uint8."""
    _, inverse_gain = bundle.gains(quality)
    y_hat = (coded.residual[0] + coded.means[0] / MEAN_UNIT) * inverse_gain[:, None, None]
    x_hat = tiled(lambda t: transforms("g_s", t, quality), y_hat, 16, tile // 16, HALO // 16)
    x_hat = np.clip(x_hat[:, :height, :width], 0, 1) * 255
    return np.ascontiguousarray(np.round(x_hat).astype(np.uint8).transpose(1, 2, 0))


def latent_shapes(bundle: ModelBundle, height: int, width: int) -> tuple[tuple, tuple]:
    padded_h, padded_w = -(-height // PAD) * PAD, -(-width // PAD) * PAD
    cfg = bundle.config
    z_shape = (1, cfg.H, padded_h // 64, padded_w // 64)
    y_shape = (1, cfg.M, padded_h // 16, padded_w // 16)
    return z_shape, y_shape


def z_table_index(bundle: ModelBundle, shape: tuple, quality: float) -> np.ndarray:
    """The z table of every element of a z of `shape` coded at `quality`: its channel's, in
    the quality's set of tables (see `ModelBundle.z_table_level`)."""
    first = bundle.z_table_level(quality) * shape[1]
    return np.broadcast_to(first + np.arange(shape[1])[None, :, None, None], shape)


def compress(image, quality: float = DEFAULT_QUALITY, device: str = "cpu",
             model: str = DEFAULT_MODEL, tile: int = TILE, precision: str = "float32",
             max_pixels: int = vae_format.DEFAULT_MAX_PIXELS, backend: str | None = None,
             target_size: int | str | None = None, target_bpp: float | None = None,
             target_psnr: float | None = None, effort: int = 0, postfilter: bool = True,
             correction: bool = True) -> bytes:
    """Compress an image (a path, a PIL image or an H x W x 3 uint8 array) to `.vae` bytes.

    `quality` runs from 0 (smallest) to 8 (best), fractional values included (below 1,
    extended from the gain levels 1 and 2: see `architecture.LOWEST_QUALITY`). Instead of a
    quality, one target may be given: `target_size` (bytes, or a string such as "40KB"),
    `target_bpp`, or `target_psnr` (dB); the quality is then searched for (see
    `rate_control.py`) and stored in the file as usual. `device` is "cpu", "cuda" or "auto".
    `tile` (pixels), `precision` ("float32" or "float64") and `backend` ("numpy", the CPU
    default, or "torch") change only how the float networks run; any decoder decodes the
    result. `effort` 1..3 spends more encoding time (and needs PyTorch) for smaller files
    that decode as fast (see `refine.py`). `postfilter` (on by default) decodes the image
    once more to fit the post-filter of `postfilter.py`, about 100 bytes that make the decoded
    image closer to the original; False encodes faster. `correction` (on by default) adds the
    corrections of `correction.py` where they pay for their bits (the high qualities);
    False leaves them out. Raises a `VaecodecError` subclass on bad input."""
    from . import rate_control
    from .metrics import psnr
    from .refine import check_effort

    quality = check_quality(quality)
    effort = check_effort(effort)
    source = imageio.prepare(image, max_pixels)
    bundle = load_model(model)
    transforms = transforms_for(bundle, device, precision, backend)
    tile = check_tile(tile)
    analyzed = {}   # the latents of the last quality analysed (of any, for most models)

    def latents(q: float) -> np.ndarray:
        key = q if bundle.config.modulated else None
        if key not in analyzed:
            analyzed.clear()
            analyzed[key] = analyze(bundle, source.rgb, q, transforms, tile)
        return analyzed[key]
    extras = {}
    if source.alpha is not None:
        extras["alpha"] = zlib.compress(source.alpha.tobytes(), 9)
    if source.icc_profile:
        extras["icc"] = zlib.compress(source.icc_profile, 9)
    height, width = source.rgb.shape[:2]
    targets = rate_control.Targets.parse(target_size, target_bpp, target_psnr, width * height)
    shown = {}      # quality -> the image a decoder shows, where it was computed

    def finish(coded: Coded, q: float, latent_q: float, need_image: bool) -> bytes | None:
        """The file of quality q from latents coded at latent_q; None where latent_q is below q
        and no corrections pay (the latents must then go at q itself)."""
        sections = {
            "z": entropy_coding.encode(coded.z, z_table_index(bundle, coded.z.shape, latent_q),
                                       bundle.z_tables),
            "y": encode_y(bundle, coded),
            **extras,
        }
        correcting = correction and correction_layer.decision_lambda(q) > 0
        if postfilter or correcting or need_image:
            shown[q] = synthesize(bundle, coded, latent_q, height, width, transforms, tile)
        if postfilter:
            sections["filter"], shown[q] = filter_section(shown[q], source.rgb, q)
        if correcting:
            sections["correction"], shown[q] = correction_section(shown[q], source.rgb, q)
            if not sections["correction"] and latent_q < q:
                return None
        header = vae_format.Header(bundle.model_id, bundle.weights_hash, q, width, height,
                                   source.mode, latent_quality=latent_q)
        return vae_format.pack(header, sections)

    def encode(q: float, level: int = 0) -> tuple[bytes, Coded]:
        latent_q = latent_quality(q, correction)
        coded = quantize(bundle, latents(latent_q), latent_q, transforms, (height, width))
        data = finish(coded, q, latent_q, need_image=level > 0)
        if data is None:
            latent_q = q
            coded = quantize(bundle, latents(q), q, transforms, (height, width))
            data = finish(coded, q, q, need_image=level > 0)
        if level:
            plain_image = shown[q]
            refined = refine(bundle, coded, latents(latent_q), source.rgb, latent_q, level,
                             transforms)
            refined_data = finish(refined, q, latent_q, need_image=True)
            # Refinement never makes a file larger or its image worse.
            if (refined_data is not None and len(refined_data) <= len(data)
                    and psnr(source.rgb, shown[q]) >= psnr(source.rgb, plain_image)):
                return refined_data, refined
            shown[q] = plain_image
        return data, coded

    if targets is None:
        return encode(quality, effort)[0]

    def psnr_of(coded: Coded, q: float) -> float:
        if q not in shown:      # neither post-filter nor corrections: the latents are at q
            shown[q] = synthesize(bundle, coded, q, height, width, transforms, tile)
        return psnr(source.rgb, shown[q])

    data = rate_control.search(encode, psnr_of, targets)
    if effort:
        # Refinement never enlarges the file nor lowers its PSNR, so the quality found with
        # plain encodings still meets the target: refine once, at that quality.
        data = encode(vae_format.describe(data)["quality"], effort)[0]
    return data


def read(data: bytes, max_pixels: int = vae_format.DEFAULT_MAX_PIXELS):
    """Validate a `.vae` file and decode its symbols: (header, bundle, coded, sections)."""
    header, sections = vae_format.unpack(bytes(data), max_pixels)
    bundle = load_model(header.model_id)
    if bundle.weights_hash != header.weights_hash:
        raise ModelMismatchError(
            f"file was made with other weights of model '{header.model_id}' "
            f"(hash {header.weights_hash.hex()}, this vaecodec has {bundle.weights_hash.hex()})")
    z_shape, y_shape = latent_shapes(bundle, header.height, header.width)
    z_index = z_table_index(bundle, z_shape, header.latent_quality)
    z = entropy_coding.decode(sections["z"], z_index, bundle.z_tables)
    coded = decode_y(bundle, sections["y"], z.reshape(z_shape), y_shape)
    return header, bundle, coded, sections


def decompress(data: bytes, device: str = "cpu", tile: int = TILE, precision: str = "float32",
               max_pixels: int = vae_format.DEFAULT_MAX_PIXELS, backend: str | None = None):
    """Decode `.vae` bytes to a PIL image in the original mode (RGB, L, RGBA or LA), with its
    ICC profile. Raises a `VaecodecError` subclass on a bad file."""
    tile = check_tile(tile)
    header, bundle, coded, sections = read(data, max_pixels)
    filter_weights = decode_filter(sections["filter"]) if sections["filter"] else None
    transforms = transforms_for(bundle, device, precision, backend)
    rgb = synthesize(bundle, coded, header.latent_quality, header.height, header.width,
                     transforms, tile)
    if filter_weights is not None:
        rgb = apply_filter(rgb, filter_weights)
    if sections["correction"] and header.version == 4:
        rgb = correction_v4.decode(sections["correction"], rgb, coded.residual)
    elif sections["correction"]:
        rgb = correction_layer.decode(sections["correction"], rgb)
    alpha = None
    if header.mode in ("RGBA", "LA"):
        try:
            inflater = zlib.decompressobj()
            plane = inflater.decompress(sections["alpha"], header.width * header.height + 1)
            alpha = np.frombuffer(plane, np.uint8)
        except zlib.error:
            raise FormatError("corrupt .vae file (alpha section)") from None
        if alpha.size != header.width * header.height:
            raise FormatError("corrupt .vae file (alpha plane size)")
        alpha = alpha.reshape(header.height, header.width)
    icc = None
    if sections["icc"]:
        try:
            icc = zlib.decompress(sections["icc"])
        except zlib.error:
            raise FormatError("corrupt .vae file (ICC section)") from None
    return imageio.assemble(rgb, header.mode, alpha, icc)
