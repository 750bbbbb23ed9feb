"""The correction layer (vaecodec/correction.py): the error transform-coded at the high qualities,
decoded exactly, left out where it does not pay, and refused cleanly when corrupt."""

import zlib

import numpy as np
import pytest

import vaecodec
from vaecodec import codec, correction, format as vae_format

from .conftest import KODAK, psnr


@pytest.fixture(scope="module")
def textured() -> np.ndarray:
    """A piece of Kodak's mountain stream: fine texture, where the corrections pay at the top
    (on the smooth parrots of the shared crop they do not)."""
    from PIL import Image

    return np.ascontiguousarray(
        np.asarray(Image.open(KODAK / "kodim13.png").convert("RGB"))[100:292, 200:456])


@pytest.fixture(scope="module")
def files(textured) -> dict:
    return {(q, on): vaecodec.compress(textured, quality=q, correction=on)
            for q in (0, 8) for on in (False, True)}


def test_high_quality_files_carry_corrections_that_pay(textured, files):
    crop = textured
    plain, corrected = files[8, False], files[8, True]
    info = vaecodec.info(corrected)
    assert info["format_version"] == 5 and info["correction_bytes"] > 0
    gain_db = psnr(crop, np.asarray(vaecodec.decompress(corrected))) - psnr(
        crop, np.asarray(vaecodec.decompress(plain)))
    extra_bits = 8 * (len(corrected) - len(plain))
    # The encoder's rule: the corrections lower bits + lambda * 255^2 * MSE.
    lam = correction.decision_lambda(8)
    pixels = crop.shape[0] * crop.shape[1]
    mse_plain = 255**2 / 10 ** (psnr(crop, np.asarray(vaecodec.decompress(plain))) / 10)
    mse_corrected = 255**2 / 10 ** (psnr(crop, np.asarray(vaecodec.decompress(corrected))) / 10)
    assert gain_db > 0.3
    assert extra_bits < lam * (mse_plain - mse_corrected) * pixels


def test_low_quality_files_stay_as_before(files):
    assert files[0, True] == files[0, False]
    assert vaecodec.info(files[0, True])["format_version"] == 3


def test_sections_decode_to_the_encoders_image(crop):
    rng = np.random.default_rng(1)
    # Sides that are not multiples of the 8 x 8 blocks too.
    for original in (crop, crop[:91, :77]):
        decoded = np.clip(original.astype(int) + rng.integers(-40, 41, original.shape), 0, 255
                          ).astype(np.uint8)
        coefficients = correction.transform(original.astype(np.int16) - decoded)
        for step in (5, 29, 72):
            symbols = correction.quantize(coefficients, step)
            section = correction.encode(symbols, step)
            corrected = correction.decode(section, decoded)
            assert np.array_equal(corrected, correction.apply_symbols(decoded, symbols, step))
            assert psnr(corrected, original) > psnr(decoded, original)


def test_the_transforms_are_orthonormal_in_fixed_point():
    # transform inverts apply_symbols: the symbols come back from the corrected pixels (up to
    # their rounding to integers, far less than a step).
    decoded = np.full((16, 24, 3), 128, np.uint8)
    symbols = np.zeros((3, 2, 3, 64), np.int16)
    symbols[0, 1, 2, 9] = 10            # grey, block (1, 2), frequency (1, 1)
    symbols[2, 0, 0, 0] = -3            # (1, -2, 1), block (0, 0), the mean
    corrected = correction.apply_symbols(decoded, symbols, 7)
    coefficients = correction.transform(corrected.astype(np.int16) - decoded)
    assert np.array_equal(np.round(coefficients / 7), symbols)
    assert np.array_equal(correction.apply_symbols(decoded, 0 * symbols, 7), decoded)


def test_tables_are_integers_with_every_value_possible():
    for sparsity in (1, 2, 100, 255):
        for decay in (0, 1, 128, 255):
            table = correction.context_table(sparsity, decay)
            assert table.dtype == np.int64 and len(table) == 2 * correction.RADIUS + 2
            assert table.min() >= 1 and table.sum() < 1 << 22
    # Regression: the integer construction is part of the format.
    table = correction.context_table(33, 100)
    assert (table.sum(), table[correction.RADIUS], table[correction.RADIUS + 1]) == (
        1048559, 786506, 79849)


def test_corrupt_sections_raise_format_errors(textured, files):
    header, bundle, coded, sections = codec.read(files[8, True])
    section = sections["correction"]
    decoded = np.zeros(textured.shape, np.uint8)
    for bad in (b"", b"\0" + section[1:], section[:-1], section + b"\0", section[:3]):
        with pytest.raises(vaecodec.FormatError):
            correction.decode(bad, decoded)


def test_the_correction_flag_belongs_to_versions_4_and_5(files):
    from .test_errors import rewrite_header

    corrected = files[8, True]
    with pytest.raises(vaecodec.FormatError, match="flags"):
        vaecodec.decompress(rewrite_header(corrected, version=3))
    with pytest.raises(vaecodec.FormatError, match="flags"):
        vaecodec.decompress(rewrite_header(corrected, flags=3))
    # Without the flag, the section's bytes are bytes the header does not account for.
    with pytest.raises(vaecodec.FormatError, match="padded"):
        vaecodec.decompress(rewrite_header(corrected, flags=0))
    assert vae_format.read_header(corrected)[1]["correction"] == vaecodec.info(
        corrected)["correction_bytes"]


def test_corrections_fade_in_from_quality_3(textured):
    assert correction.decision_lambda(3) == 0 == correction.decision_lambda(0.5)
    assert correction.decision_lambda(5) == codec.quality_lambda(5)
    assert 0 < correction.decision_lambda(4) < codec.quality_lambda(4)
    assert vaecodec.info(vaecodec.compress(textured, quality=3))["correction_bytes"] == 0


def test_corrected_files_code_their_latents_lower(textured, files):
    corrected, plain = vaecodec.info(files[8, True]), vaecodec.info(files[8, False])
    assert (corrected["quality"], corrected["latent_quality"]) == (8, codec.LATENT_QUALITY_CAP)
    assert (plain["quality"], plain["latent_quality"]) == (8, 8)
    assert corrected["y_bytes"] < plain["y_bytes"]
    # A file's quality is stored ahead of its corrections; it may not be below the latents'.
    header, lengths = vae_format.read_header(files[8, True])
    at = vae_format.HEADER_SIZE + sum(n for name, n in lengths.items() if name != "correction")
    for stored in (449, 801):
        bad = bytearray(files[8, True])
        bad[at:at + 2] = stored.to_bytes(2, "little")
        checksum = zlib.crc32(bad[vae_format.HEADER_SIZE:], zlib.crc32(bad[:50]))
        bad[50:54] = checksum.to_bytes(4, "little")
        with pytest.raises(vaecodec.FormatError, match="quality"):
            vaecodec.decompress(bytes(bad))


def test_where_no_correction_pays_the_latents_go_at_the_quality(kodim23):
    # A small smooth piece: at quality 8 its latents at 4.5 leave too little error for any
    # correction to pay, so the file is the latents at 8, as without corrections.
    piece = np.ascontiguousarray(kodim23[:64, :64])
    data = vaecodec.compress(piece, quality=8)
    info = vaecodec.info(data)
    assert (info["latent_quality"], info["correction_bytes"], info["format_version"]) == (8, 0, 2)
    assert data == vaecodec.compress(piece, quality=8, correction=False)
