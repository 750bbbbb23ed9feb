"""The codec: ties the networks, the exact entropy-parameter network, the entropy coder and the
file format into `compress` and `decompress`.

Encoding: x -> g_a -> y * gain -> h_a -> z, rounded and coded under the factorized tables; the
integer hyper-synthesis turns z into means (fixed point) and scale indices; y is coded as the
integer residual round(y - mean) under the Gaussian table of its scale index.
Decoding repeats the integer hyper-synthesis on the decoded z, so it recovers exactly the same
means and indices, adds the means back, and runs g_s. Only the last step is floating point, and
it cannot disturb the symbols.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from . import entropy_coding, format as vae_format, imageio
from .errors import FormatError, InputError, ModelMismatchError
from .integer_net import ACTIVATION_BITS
from .weights import DEFAULT_MODEL, ModelBundle, load_model

PAD = 64                   # y is 1/16 and z 1/64 of the image size
TILE = 512                 # pixels per tile side for the float networks
HALO = 64                  # pixels of context around each tile (> the receptive field radius)
DEFAULT_QUALITY = 4.0
PRECISIONS = ("float32", "float64")
MEAN_UNIT = float(1 << ACTIVATION_BITS)   # means are integers in units of 1/MEAN_UNIT


@dataclass
class Coded:
    """Everything `encode_latents` and `decode_latents` agree on, for tests and tools."""

    z: np.ndarray            # int64 (1, H, h, w)
    residual: np.ndarray     # int64 (1, M, 4h, 4w)
    means: np.ndarray        # int64, units of 2^-ACTIVATION_BITS
    scale_index: np.ndarray  # int64


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device '{device}' (use cpu, cuda or auto)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def check_quality(quality: float) -> float:
    try:
        quality = float(quality)
    except (TypeError, ValueError):
        raise InputError(f"quality must be a number from 1 to 8, not {quality!r}") from None
    if not 1.0 <= quality <= 8.0:
        raise InputError(f"quality must be from 1 to 8, not {quality}")
    return round(quality * 100) / 100      # the header stores hundredths


def check_tile(tile: int) -> int:
    if not isinstance(tile, int) or tile < PAD or tile % PAD:
        raise InputError(f"tile must be a multiple of {PAD} pixels, not {tile!r}")
    return tile


def tiled(function, x, scale: float, tile: int, halo: int):
    """Apply a convolutional `function` tile by tile with `halo` of context (in input units)
    around each tile; `scale` is output size / input size. Identical to one call on the whole
    input up to float rounding, because the halo covers the receptive field."""
    import torch

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
            out = function(x[..., t:b, l:r])
            row.append(out[..., int((top - t) * scale):int((bottom - t) * scale),
                           int((left - l) * scale):int((right - l) * scale)])
        rows.append(torch.cat(row, dim=-1))
    return torch.cat(rows, dim=-2)


def to_tensor(rgb: np.ndarray, device, dtype):
    import torch

    x = torch.from_numpy(np.array(rgb, np.uint8)).to(device).permute(2, 0, 1)[None].to(dtype) / 255.0
    height, width = rgb.shape[:2]
    return torch.nn.functional.pad(x, (0, -width % PAD, 0, -height % PAD), mode="replicate")


def encode_latents(bundle: ModelBundle, rgb: np.ndarray, quality: float, device="cpu",
                   dtype=None, tile: int = TILE) -> Coded:
    """Analysis transforms and quantization: the integer symbols a file stores."""
    import torch

    dtype = dtype or torch.float32
    vae = bundle.vae.to(device=device, dtype=dtype)
    with torch.no_grad():
        x = to_tensor(rgb, device, dtype)
        gain, _ = vae.gains(quality)
        y = tiled(vae.g_a, x, 1 / 16, tile, HALO) * gain.to(device, dtype)
        z = vae.h_a(y)
        z = torch.round(z).clamp(entropy_coding.VALUE_MIN, entropy_coding.VALUE_MAX)
        z = z.to(torch.int64).cpu().numpy()
        means, scale_index = bundle.hyper(z)
        means_t = torch.from_numpy(means).to(device, torch.float64) / MEAN_UNIT
        residual = torch.round(y.to(torch.float64) - means_t)
        residual = residual.clamp(entropy_coding.VALUE_MIN, entropy_coding.VALUE_MAX)
    return Coded(z=z, residual=residual.to(torch.int64).cpu().numpy(), means=means,
                 scale_index=scale_index)


def synthesize(bundle: ModelBundle, coded: Coded, quality: float, height: int, width: int,
               device="cpu", dtype=None, tile: int = TILE) -> np.ndarray:
    """The decoder's image from the symbols: (height, width, 3) uint8."""
    import torch

    dtype = dtype or torch.float32
    vae = bundle.vae.to(device=device, dtype=dtype)
    with torch.no_grad():
        y_hat = (torch.from_numpy(coded.residual).to(device, torch.float64)
                 + torch.from_numpy(coded.means).to(device, torch.float64) / MEAN_UNIT)
        _, inverse_gain = vae.gains(quality)
        y_hat = y_hat.to(dtype) * inverse_gain.to(device, dtype)
        x_hat = tiled(vae.g_s, y_hat, 16, tile // 16, HALO // 16)
        x_hat = x_hat[0, :, :height, :width].clamp(0, 1).mul(255).round().to(torch.uint8)
    return x_hat.permute(1, 2, 0).cpu().numpy()


def latent_shapes(bundle: ModelBundle, height: int, width: int) -> tuple[tuple, tuple]:
    padded_h, padded_w = -(-height // PAD) * PAD, -(-width // PAD) * PAD
    cfg = bundle.meta["config"]
    z_shape = (1, cfg["H"], padded_h // 64, padded_w // 64)
    y_shape = (1, cfg["M"], padded_h // 16, padded_w // 16)
    return z_shape, y_shape


def z_table_index(shape: tuple) -> np.ndarray:
    return np.broadcast_to(np.arange(shape[1])[None, :, None, None], shape)


def resolve_precision(precision: str):
    import torch

    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (use {' or '.join(PRECISIONS)})")
    return getattr(torch, precision)


def compress(image, quality: float = DEFAULT_QUALITY, device: str = "cpu",
             model: str = DEFAULT_MODEL, tile: int = TILE, precision: str = "float32",
             max_pixels: int = vae_format.DEFAULT_MAX_PIXELS) -> bytes:
    """Compress an image (a path, a PIL image or an H x W x 3 uint8 array) to `.vae` bytes.

    `quality` runs from 1 (smallest) to 8 (best), fractional values included. `tile` (pixels)
    and `precision` ("float32" or "float64") change only how the float networks run; any
    decoder decodes the result. Raises a `VaecodecError` subclass on bad input."""
    quality = check_quality(quality)
    source = imageio.prepare(image, max_pixels)
    bundle = load_model(model)
    torch_device = resolve_device(device)
    coded = encode_latents(bundle, source.rgb, quality, torch_device,
                           resolve_precision(precision), tile=check_tile(tile))
    height, width = source.rgb.shape[:2]
    sections = {
        "z": entropy_coding.encode(coded.z, z_table_index(coded.z.shape), bundle.z_tables),
        "y": entropy_coding.encode(coded.residual, coded.scale_index, bundle.y_tables),
    }
    if source.alpha is not None:
        sections["alpha"] = zlib.compress(source.alpha.tobytes(), 9)
    if source.icc_profile:
        sections["icc"] = zlib.compress(source.icc_profile, 9)
    header = vae_format.Header(bundle.model_id, bundle.weights_hash, quality, width, height,
                               source.mode)
    return vae_format.pack(header, sections)


def read(data: bytes, max_pixels: int = vae_format.DEFAULT_MAX_PIXELS):
    """Validate a `.vae` file and decode its symbols: (header, bundle, coded, sections)."""
    header, sections = vae_format.unpack(bytes(data), max_pixels)
    bundle = load_model(header.model_id)
    if bundle.weights_hash != header.weights_hash:
        raise ModelMismatchError(
            f"file was made with other weights of model '{header.model_id}' "
            f"(hash {header.weights_hash.hex()}, this vaecodec has {bundle.weights_hash.hex()})")
    z_shape, y_shape = latent_shapes(bundle, header.height, header.width)
    z = entropy_coding.decode(sections["z"], z_table_index(z_shape), bundle.z_tables)
    z = z.reshape(z_shape)
    means, scale_index = bundle.hyper(z)
    residual = entropy_coding.decode(sections["y"], scale_index, bundle.y_tables)
    coded = Coded(z=z, residual=residual.reshape(y_shape), means=means, scale_index=scale_index)
    return header, bundle, coded, sections


def decompress(data: bytes, device: str = "cpu", tile: int = TILE, precision: str = "float32",
               max_pixels: int = vae_format.DEFAULT_MAX_PIXELS):
    """Decode `.vae` bytes to a PIL image in the original mode (RGB, L, RGBA or LA), with its
    ICC profile. Raises a `VaecodecError` subclass on a bad file."""
    header, bundle, coded, sections = read(data, max_pixels)
    rgb = synthesize(bundle, coded, header.quality, header.height, header.width,
                     resolve_device(device), resolve_precision(precision), check_tile(tile))
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
