"""The `.vae` container: header, sections and checksum. Pure Python: no torch needed to read it.

The byte layout is documented in docs/format.md; keep the two in step.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import FormatError, LimitError, UnsupportedVersionError

MAGIC = b"VAEC"
FORMAT_VERSION = 5
# Version 3 is version 2 with qualities below 1 allowed; version 4 is version 3 with a
# correction section (flag CORRECTION) of pixel corrections; version 5 is version 4 with the
# correction section in DCT blocks instead (`correction.py`; version 4's is read by
# `correction_v4.py`), and with the quality the file was made at in two bytes ahead of the
# section, since its latents may be coded at a lower one (see `codec.latent_quality`). A writer
# gives a file the lowest version that holds it, so files of quality 1 to 8 without corrections
# stay readable by version 2 readers, and older readers refuse the others as a newer version
# rather than as corrupt.
LOWEST_QUALITY_BY_VERSION = {1: 100, 2: 100, 3: 0, 4: 0, 5: 0}     # hundredths
CORRECTION = 1      # flags bit: the payload ends with a correction section (version 4 on)
# magic, version, mode, flags, post-filter length (version 2; 0 in version 1), model id,
# weights hash, quality x100, width, height, four section lengths; the CRC-32 follows.
_HEADER = struct.Struct("<4sBBBB8s8sHII4I")
_QUALITY = struct.Struct("<H")      # version 5: the file's quality x100, ahead of the corrections
HEADER_SIZE = _HEADER.size + 4
MODES = ("RGB", "L", "RGBA", "LA")
SECTIONS = ("z", "y", "alpha", "icc", "filter", "correction")
MAX_FILTER_BYTES = 255
# Pixels a decoder accepts unless told otherwise: 2^28, a little over 16384 x 16384.
DEFAULT_MAX_PIXELS = 1 << 28


@dataclass(frozen=True)
class Header:
    """What a `.vae` file says about itself. `quality` is the quality the file was made at;
    `latent_quality` the one its latents were coded at: the same, except where corrections
    carry the detail that higher latent qualities would (version 5)."""

    model_id: str
    weights_hash: bytes
    quality: float
    width: int
    height: int
    mode: str
    version: int = FORMAT_VERSION
    latent_quality: float | None = None     # None: the same as quality

    def __post_init__(self):
        if self.latent_quality is None:
            object.__setattr__(self, "latent_quality", self.quality)

    def as_dict(self) -> dict:
        return {
            "format_version": self.version, "model": self.model_id,
            "weights_hash": self.weights_hash.hex(), "quality": self.quality,
            "latent_quality": self.latent_quality,
            "width": self.width, "height": self.height, "mode": self.mode,
        }


def pack(header: Header, sections: dict[str, bytes]) -> bytes:
    """Serialise a header and its sections into the bytes of a `.vae` file."""
    latent = round(header.latent_quality * 100)
    corrected = bool(sections.get("correction"))
    if not corrected and header.latent_quality != header.quality:
        raise ValueError("only a file with corrections has latents of another quality")
    version = 5 if corrected else 2 if latent >= LOWEST_QUALITY_BY_VERSION[2] else 3
    model = header.model_id.encode("ascii")
    if len(model) > 8 or len(header.weights_hash) != 8:
        raise ValueError("model id must be at most 8 ASCII bytes and the weights hash 8 bytes")
    payload = [sections.get(name, b"") for name in SECTIONS]
    if corrected:
        payload[5] = _QUALITY.pack(round(header.quality * 100)) + payload[5]
    if len(payload[4]) > MAX_FILTER_BYTES:
        raise ValueError(f"a post-filter section holds at most {MAX_FILTER_BYTES} bytes")
    # The correction section's length is what the file holds past the others.
    fixed = _HEADER.pack(
        MAGIC, version, MODES.index(header.mode), CORRECTION if corrected else 0,
        len(payload[4]), model.ljust(8, b"\0"), header.weights_hash, latent, header.width,
        header.height, *(len(p) for p in payload[:4]),
    )
    body = b"".join(payload)
    checksum = zlib.crc32(body, zlib.crc32(fixed))
    return fixed + struct.pack("<I", checksum) + body


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Header, dict[str, int]]:
    """Parse and validate the header; returns it with the section lengths. Checks everything
    that can be checked without the payload: magic, version, mode, sizes, lengths, limits."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not a .vae file (wrong magic number)")
    if len(data) < 5:
        raise FormatError("truncated .vae file (header incomplete)")
    if data[4] > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f".vae format version {data[4]} is newer than this vaecodec reads ({FORMAT_VERSION})")
    if len(data) < HEADER_SIZE:
        raise FormatError("truncated .vae file (header incomplete)")
    (_, version, mode, flags, filter_length, model, weights_hash, quality, width, height,
     *lengths) = _HEADER.unpack_from(data)
    if version == 0:
        raise FormatError("corrupt .vae header (version 0)")
    allowed_flags = CORRECTION if version >= 4 else 0
    if mode >= len(MODES) or flags & ~allowed_flags or (version == 1 and filter_length):
        raise FormatError("corrupt .vae header (unknown mode or flags)")
    lengths.append(filter_length)
    if not LOWEST_QUALITY_BY_VERSION[version] <= quality <= 800:
        raise FormatError(f"corrupt .vae header (quality {quality / 100} out of range)")
    if width == 0 or height == 0:
        raise FormatError("corrupt .vae header (zero width or height)")
    if width * height > max_pixels:
        raise LimitError(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    try:
        model_id = model.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("corrupt .vae header (model id)") from None
    payload = len(data) - HEADER_SIZE
    latent_quality = quality
    if flags & CORRECTION:
        prefix = _QUALITY.size if version >= 5 else 0
        if payload <= sum(lengths) + prefix:
            raise FormatError(
                f"truncated .vae file ({payload} payload bytes, header says more than "
                f"{sum(lengths) + prefix})")
        if prefix:
            (quality,) = _QUALITY.unpack_from(data, HEADER_SIZE + sum(lengths))
            if not latent_quality <= quality <= 800:
                raise FormatError(f"corrupt .vae file (quality {quality / 100} out of range)")
        lengths.append(payload - sum(lengths) - prefix)
    elif sum(lengths) != payload:
        raise FormatError(
            f"truncated or padded .vae file ({payload} payload bytes, "
            f"header says {sum(lengths)})")
    else:
        lengths.append(0)
    header = Header(model_id, weights_hash, quality / 100, width, height, MODES[mode], version,
                    latent_quality / 100)
    return header, dict(zip(SECTIONS, lengths))


def unpack(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Header, dict[str, bytes]]:
    """Validate a whole `.vae` file (header and checksum) and split it into its sections."""
    header, lengths = read_header(data, max_pixels)
    (stored,) = struct.unpack_from("<I", data, _HEADER.size)
    if zlib.crc32(data[HEADER_SIZE:], zlib.crc32(data[:_HEADER.size])) != stored:
        raise FormatError("corrupt .vae file (checksum mismatch)")
    sections, offset = {}, HEADER_SIZE
    for name in SECTIONS:
        if name == "correction" and header.version >= 5 and lengths[name]:
            offset += _QUALITY.size
        sections[name] = data[offset:offset + lengths[name]]
        offset += lengths[name]
    return header, sections


def describe(data: bytes) -> dict:
    """The header of a `.vae` file and its section sizes, without decoding anything."""
    header, lengths = read_header(bytes(data), max_pixels=1 << 62)
    result = header.as_dict()
    result.update({f"{name}_bytes": n for name, n in lengths.items()})
    result["file_bytes"] = len(data)
    result["bpp"] = round(8 * len(data) / (header.width * header.height), 4)
    return result
