"""The post-filter: what a decoder shows is the synthesis' output filtered exactly as the
encoder chose, the filter makes the image closer to the original and pays for its bytes, its
section is validated, and files without one (format version 1 included) decode as before."""

import zlib

import numpy as np
import pytest

import vaecodec
from vaecodec import codec, format as vae_format, postfilter
from vaecodec.architecture import quality_lambda
from vaecodec.weights import load_model

from .conftest import psnr, run_cli


@pytest.fixture(scope="module")
def filtered_file(kodim23) -> bytes:
    data = vaecodec.compress(kodim23, quality=4)
    assert vaecodec.info(data)["filter_bytes"] > 0
    return data


def reference_filter(decoded: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The module docstring's definition, feature by feature, in Python integers."""
    r = postfilter.RADIUS
    height, width = decoded.shape[:2]
    padded = np.pad(decoded.astype(object), ((r, r), (r, r), (0, 0)), mode="edge")

    def at(c, i, j):
        return padded[r + i:r + i + height, r + j:r + j + width, c]

    out = np.empty_like(decoded)
    for channel in range(3):
        features = [at(c, i, j) + at(c, -i, -j) - 2 * at(c, 0, 0)
                    for c in range(3) for i, j in postfilter.OFFSETS]
        features += [at(c, 0, 0) - at(channel, 0, 0) for c in range(3) if c != channel]
        features.append(np.ones((height, width), object))
        total = sum(f * int(w) for f, w in zip(features, weights[channel]))
        shifted = (total + (1 << (postfilter.FRACTION_BITS - 1))) // (1 << postfilter.FRACTION_BITS)
        out[..., channel] = np.clip(at(channel, 0, 0) + shifted, 0, 255).astype(np.uint8)
    return out


def test_the_decoder_shows_the_encoders_filtered_image(kodim23, filtered_file):
    bundle = load_model()
    header, _, coded, sections = codec.read(filtered_file)
    transforms = codec.transforms_for(bundle, "cpu", "float32", None)
    synthesized = codec.synthesize(bundle, coded, header.quality, *kodim23.shape[:2], transforms)
    weights = postfilter.decode(sections["filter"])
    shown = np.asarray(vaecodec.decompress(filtered_file))
    assert np.array_equal(shown, postfilter.apply(synthesized, weights))
    # Closer to the original by more than the filter's bytes cost, on the model's own scale.
    gained = (postfilter.squared_error(synthesized, kodim23)
              - postfilter.squared_error(shown, kodim23)) / 3
    assert quality_lambda(header.quality) * gained > 8 * len(sections["filter"])
    assert psnr(shown, kodim23) > psnr(synthesized, kodim23) + 0.02


def test_without_the_filter_only_the_filter_section_differs(kodim23, filtered_file):
    plain = vaecodec.compress(kodim23, quality=4, postfilter=False)
    _, plain_sections = vae_format.unpack(plain)
    _, sections = vae_format.unpack(filtered_file)
    assert plain_sections["filter"] == b""
    for name in ("z", "y"):
        assert plain_sections[name] == sections[name]
    assert len(filtered_file) - len(plain) == len(sections["filter"])


@pytest.mark.parametrize("height,width", [(1, 1), (2, 3), (5, 4), (9, 13)])
def test_the_integer_filter_follows_its_definition(height, width):
    """Random images and weights, the largest allowed among them: the decoder's int32
    arithmetic gives the definition's result, without overflow, at every border."""
    rng = np.random.default_rng(height * 100 + width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for weights in (rng.integers(-300, 300, (3, postfilter.FEATURES)),
                    rng.choice([1 - postfilter.MAX_WEIGHT, postfilter.MAX_WEIGHT - 1],
                               (3, postfilter.FEATURES))):
        assert np.array_equal(postfilter.apply(image, weights), reference_filter(image, weights))


def test_bands_give_the_same_image(kodim23, monkeypatch):
    weights = np.random.default_rng(0).integers(-100, 100, (3, postfilter.FEATURES))
    piece = kodim23[:70, :90]
    whole = postfilter.apply(piece, weights)
    monkeypatch.setattr(postfilter, "BAND_PIXELS", 90 * 4)
    assert np.array_equal(postfilter.apply(piece, weights), whole)


def test_the_fit_finds_a_known_filter():
    """An image blurred by a small symmetric filter is sharpened back: the fitted filter
    removes most of the error."""
    rng = np.random.default_rng(1)
    original = np.clip(rng.normal(128, 40, (96, 96, 3)), 0, 255).astype(np.uint8)
    blurred = original.astype(float)
    blurred[1:-1, 1:-1] = (0.6 * original[1:-1, 1:-1] + 0.1 * (
        original[:-2, 1:-1].astype(float) + original[2:, 1:-1] + original[1:-1, :-2]
        + original[1:-1, 2:]))
    blurred = np.round(blurred).astype(np.uint8)
    filtered = postfilter.apply(blurred, postfilter.fit(blurred, original))
    assert postfilter.squared_error(filtered, original) < 0.5 * postfilter.squared_error(
        blurred, original)


def test_weights_survive_their_section():
    rng = np.random.default_rng(2)
    for weights in (np.zeros((3, postfilter.FEATURES), np.int64),
                    rng.integers(-40, 40, (3, postfilter.FEATURES)),
                    np.full((3, postfilter.FEATURES), postfilter.MAX_WEIGHT - 1),
                    np.full((3, postfilter.FEATURES), 1 - postfilter.MAX_WEIGHT)):
        assert np.array_equal(postfilter.decode(postfilter.encode(weights)), weights)


def test_damaged_sections_are_format_errors(filtered_file):
    section = vae_format.unpack(filtered_file)[1]["filter"]
    damaged = [b"", section[:3], section[:-1], section + b"\0", section + b"\x80",
               bytes([16]) + section[1:], b"\0\0\0" + b"\0" * 20, b"\0\0\0\xff"]
    for data in damaged:
        with pytest.raises(vaecodec.FormatError):
            postfilter.decode(data)
    # Every cut of the section, inside a file with a true header: a clean error or an image.
    header, sections = vae_format.unpack(filtered_file)
    for cut in range(0, len(section), 7):
        sections["filter"] = section[:cut]
        try:
            vaecodec.decompress(vae_format.pack(header, sections))
        except vaecodec.FormatError:
            pass


def test_a_version_1_file_decodes_as_before(crop):
    data = bytearray(vaecodec.compress(crop, quality=3, postfilter=False))
    expected = np.asarray(vaecodec.decompress(bytes(data)))
    data[4] = 1
    header = vae_format.HEADER_SIZE
    data[header - 4:header] = zlib.crc32(
        bytes(data[header:]), zlib.crc32(bytes(data[:header - 4]))).to_bytes(4, "little")
    assert vaecodec.info(bytes(data))["format_version"] == 1
    assert np.array_equal(np.asarray(vaecodec.decompress(bytes(data))), expected)
    # Version 1 had no post-filter: its byte 7 must stay zero.
    data[7] = 1
    with pytest.raises(vaecodec.FormatError):
        vaecodec.decompress(bytes(data))


def test_the_cli_can_leave_the_filter_out(tmp_path):
    from PIL import Image

    from .conftest import KODAK

    source = tmp_path / "in.png"
    Image.open(KODAK / "kodim23.png").save(source)
    for flags, expect_filter in (([], True), (["--no-filter"], False)):
        out = tmp_path / f"out{len(flags)}.vae"
        result = run_cli("compress", source, "-o", out, *flags)
        assert result.returncode == 0, result.stderr
        assert (vaecodec.info(out.read_bytes())["filter_bytes"] > 0) == expect_filter
