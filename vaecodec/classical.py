"""The classical codecs the benchmark compares against, all through Pillow (JPEG XL through the
pillow-jxl-plugin package when it is installed). Each codec is a list of settings plus an
encode and a decode function on 8-bit RGB arrays."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, features


@dataclass(frozen=True)
class ClassicalCodec:
    """A codec at a list of settings that spans about 0.05 to 2.5 bpp on photographs."""

    name: str
    description: str
    settings: tuple
    encode: Callable[[np.ndarray, object], bytes]
    quick_settings: tuple = ()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))


def _saver(fmt: str, options: Callable[[object], dict]):
    def encode(rgb: np.ndarray, setting) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format=fmt, **options(setting))
        return buffer.getvalue()

    return encode


def available_codecs() -> dict[str, ClassicalCodec]:
    """The classical codecs this installation can run, by name."""
    codecs = {
        "jpeg420": ClassicalCodec(
            "jpeg420", f"JPEG 4:2:0, libjpeg-turbo {features.version('libjpeg_turbo')}, "
            "Pillow quality", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            _saver("JPEG", lambda q: {"quality": q, "subsampling": 2}), (10, 50, 90)),
        "jpeg444": ClassicalCodec(
            "jpeg444", f"JPEG 4:4:4, libjpeg-turbo {features.version('libjpeg_turbo')}, "
            "Pillow quality", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            _saver("JPEG", lambda q: {"quality": q, "subsampling": 0}), (10, 50, 90)),
        "webp": ClassicalCodec(
            "webp", f"WebP {features.version('webp')}, method 6, Pillow quality",
            (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100),
            _saver("WEBP", lambda q: {"quality": q, "method": 6}), (10, 50, 90)),
        "jpeg2000": ClassicalCodec(
            "jpeg2000", f"JPEG 2000, OpenJPEG {features.version('jpg_2000')}, rate-controlled "
            "(compression ratio)", (400, 200, 120, 80, 60, 40, 30, 20, 15, 12, 10),
            _saver("JPEG2000", lambda ratio: {"quality_mode": "rates", "quality_layers": [ratio]}),
            (120, 40, 12)),
    }
    if features.check("avif"):
        codecs["avif"] = ClassicalCodec(
            "avif", f"AVIF, libavif {features.version('avif')}, default tuning, Pillow quality",
            (2, 10, 20, 30, 40, 50, 60, 70, 80, 90),
            _saver("AVIF", lambda q: {"quality": q}), (20, 50, 80))
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
    except ImportError:
        pass
    else:
        codecs["jpegxl"] = ClassicalCodec(
            "jpegxl", "JPEG XL (libjxl via pillow-jxl-plugin), default effort, quality",
            (2, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            _saver("JXL", lambda q: {"quality": q}), (20, 50, 80))
    return codecs
