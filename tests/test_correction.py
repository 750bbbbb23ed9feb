"""The correction layer (vaecodec/correction.py): pixel corrections at the high qualities, coded
exactly, left out where they do not pay, and refused cleanly when corrupt."""

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
    assert info["format_version"] == 4 and info["correction_bytes"] > 0
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
    decoded = np.clip(crop.astype(int) + rng.integers(-40, 41, crop.shape), 0, 255).astype(np.uint8)
    latent_residual = rng.integers(-3, 4, (1, 160, 12, 16))
    for step in (8, 29, 72):
        symbols = correction.quantize(crop.astype(np.int64) - decoded, step).astype(np.int16)
        section = correction.encode(symbols, step, latent_residual)
        assert np.array_equal(correction.decode(section, decoded, latent_residual),
                              correction.apply_symbols(decoded, symbols, step))


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
            correction.decode(bad, decoded, coded.residual)


def test_the_correction_flag_belongs_to_version_4(files):
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
