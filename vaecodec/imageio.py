"""Turning what a user passes (a path, a PIL image, an array) into 8-bit RGB plus the extras a
`.vae` file carries (mode, alpha plane, ICC profile), and back."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError, LimitError

Image.MAX_IMAGE_PIXELS = None   # our own limit below applies instead, with a clear error


@dataclass
class SourceImage:
    """An image ready for coding: RGB pixels, the mode to restore, alpha and ICC if present."""

    rgb: np.ndarray                 # (H, W, 3) uint8
    mode: str                       # "RGB", "L", "RGBA" or "LA"
    alpha: np.ndarray | None        # (H, W) uint8
    icc_profile: bytes | None


def open_image(source, max_pixels: int) -> Image.Image:
    """A PIL image from a path, a PIL image or an (H, W), (H, W, 3) or (H, W, 4) uint8 array."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (
                source.ndim == 3 and source.shape[2] not in (3, 4)):
            raise InputError("an image array must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4)")
        if source.size == 0:
            raise InputError("an image array must not be empty")
        return Image.fromarray(np.ascontiguousarray(source))
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if not path.is_file():
            raise InputError(f"{path}: not a file")
        try:
            image = Image.open(path)
            width, height = image.size
            if width * height > max_pixels:
                raise LimitError(f"{path}: {width}x{height} pixels exceeds the limit of "
                                 f"{max_pixels} pixels")
            # Pillow reads 16-bit RGB as 8-bit RGB silently; its raw mode still tells.
            deep = any(";16" in str(tile.args) for tile in image.tile)
            image.load()
            if deep and image.mode in ("RGB", "RGBA"):
                warnings.warn("16-bit input converted to 8 bits", stacklevel=4)
        except LimitError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise InputError(f"{path}: not a readable image ({error})") from None
        return image
    raise InputError(f"cannot read an image from a {type(source).__name__}")


def prepare(source, max_pixels: int) -> SourceImage:
    """Normalise any supported input to 8-bit RGB plus mode, alpha and ICC profile."""
    image = open_image(source, max_pixels)
    width, height = image.size
    if width * height > max_pixels:
        raise LimitError(f"{width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    icc = image.info.get("icc_profile") or None
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        warnings.warn("16-bit input converted to 8 bits", stacklevel=3)
        array = np.asarray(image, dtype=np.float64)
        if mode == "I" and array.max() > 255 * 257:
            array = array * (65535.0 / max(array.max(), 1))
        image = Image.fromarray(np.clip(np.round(array / 257), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        warnings.warn("floating-point input converted to 8 bits", stacklevel=3)
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8), "L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("RGB", "L", "RGBA", "LA"):
        image = image.convert("RGBA" if "A" in mode else "RGB")

    mode = image.mode
    alpha = None
    if mode in ("RGBA", "LA"):
        alpha = np.asarray(image.getchannel("A")).copy()
    # Pillow's conversion to RGB drops alpha and repeats a grey channel three times.
    rgb = np.array(image.convert("RGB") if mode != "RGB" else image, dtype=np.uint8)
    return SourceImage(rgb=rgb, mode=mode, alpha=alpha, icc_profile=icc)


def assemble(rgb: np.ndarray, mode: str, alpha: np.ndarray | None,
             icc_profile: bytes | None) -> Image.Image:
    """The decoded image in its original mode, with alpha and ICC profile restored."""
    if mode in ("L", "LA"):
        # The model codes three channels; a gray original comes back as their mean.
        gray = np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        image = Image.fromarray(gray, "L")
    else:
        image = Image.fromarray(rgb, "RGB")
    if mode in ("RGBA", "LA"):
        image.putalpha(Image.fromarray(alpha, "L"))
    if icc_profile:
        image.info["icc_profile"] = icc_profile
    return image


def save_image(image: Image.Image, path: Path, suffix: str = ".png") -> None:
    """Write `image` to `path` in the format `suffix` names (PNG if unknown), keeping the ICC
    profile."""
    fmt = Image.registered_extensions().get(suffix.lower(), "PNG")
    kwargs = {}
    if image.info.get("icc_profile"):
        kwargs["icc_profile"] = image.info["icc_profile"]
    with open(path, "wb") as handle:
        image.save(handle, format=fmt, **kwargs)
