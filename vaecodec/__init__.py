"""vaecodec: a learned image codec.

    import vaecodec
    data = vaecodec.compress("photo.png", quality=4)     # bytes of a .vae file
    image = vaecodec.decompress(data)                     # PIL.Image.Image
    vaecodec.info(data)                                   # the header, as a dict

Every failure on bad input raises a subclass of `vaecodec.VaecodecError`. Heavy modules (torch)
load on first use, so reading headers stays fast.
"""

from .errors import (
    FormatError, InputError, LimitError, ModelMismatchError, OutputError, UnsupportedVersionError,
    VaecodecError,
)

__version__ = "0.1.0"
__all__ = [
    "compress", "decompress", "info", "compress_files", "decompress_files", "anomaly_map",
    "sample", "interpolate", "VaecodecError",
    "InputError", "FormatError", "UnsupportedVersionError", "ModelMismatchError", "LimitError",
    "OutputError",
]


def compress(image, quality: float = 4.0, device: str = "cpu", **options) -> bytes:
    """Compress an image (path, PIL image or H x W x 3 uint8 array) to the bytes of a `.vae`
    file. `quality`: 0 (smallest) to 8 (best), fractional values allowed."""
    from .codec import compress as _compress

    return _compress(image, quality=quality, device=device, **options)


def decompress(data: bytes, device: str = "cpu", **options):
    """Decode the bytes of a `.vae` file to a PIL image in the original mode."""
    from .codec import decompress as _decompress

    return _decompress(data, device=device, **options)


def info(data: bytes) -> dict:
    """The header fields of a `.vae` file (model, quality, the quality of its latents, size,
    mode, section sizes)."""
    from .format import describe

    return describe(data)


def compress_files(inputs, **options):
    """Compress image files to `.vae` files; see `vaecodec.files.compress_files`."""
    from .files import compress_files as _compress_files

    return _compress_files(inputs, **options)


def decompress_files(inputs, **options):
    """Decode `.vae` files to images; see `vaecodec.files.decompress_files`."""
    from .files import decompress_files as _decompress_files

    return _decompress_files(inputs, **options)


def anomaly_map(image, quality: float = 4.0, **options):
    """Per-pixel bits, reconstruction error and anomaly score of an image; see
    `vaecodec.anomaly.anomaly_map`."""
    from .anomaly import anomaly_map as _anomaly_map

    return _anomaly_map(image, quality=quality, **options)


def sample(count: int = 8, size=(256, 256), quality: float = 4.0, seed: int = 0, **options):
    """Images drawn from the model's prior (a list of PIL images); see `vaecodec.sampling`."""
    from .sampling import sample as _sample

    return _sample(count, size, quality, seed, **options)


def interpolate(first, second, steps: int = 8, quality: float = 4.0, **options):
    """Images along the line between two images' latents; see `vaecodec.sampling`."""
    from .sampling import interpolate as _interpolate

    return _interpolate(first, second, steps, quality, **options)
