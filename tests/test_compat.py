"""Files written with earlier shipped weights still decode after new weights become the default.

The files in tests/compat were written by `vaecodec.compress(crop, quality=q, model=m)` from the
test crop of kodim23, with each earlier default model (docs/format.md lists them with the
sessions each was the default), and two files with corrections from a piece of kodim13: format
version 4 (pixel corrections) and version 5 (DCT corrections over latents at quality 4.5).
"""

from pathlib import Path

import numpy as np
import pytest

import vaecodec
from vaecodec.weights import DEFAULT_MODEL

from .conftest import psnr

COMPAT = Path(__file__).parent / "compat"


# The defaults after msh96 all meet one bar (quality 0 files are format version 3, quality 1
# files version 2), so a new one is one more name here.
LATER_MODELS = ["msh96b", "msh96c", "msh96d", "msh96e", "msh96f", "msh96g", "msh96h", "msh96i",
                "msh96j", "msh96k", "msh96l", "msh96m", "msh96n", "msh96o", "msh96p",
                "msh96q", "msh96r", "msh96s"]


@pytest.mark.parametrize("model, quality, version, min_psnr", [
    ("msh96", 0, 3, 26.5), ("msh96", 1, 2, 29.5)] + [
    (model, quality, version, min_psnr) for model in LATER_MODELS
    for quality, version, min_psnr in ((0, 3, 27.0), (1, 2, 30.0))])
def test_files_of_earlier_default_models_decode(crop, model, quality, version, min_psnr):
    data = (COMPAT / f"{model}-kodim23-crop-q{quality}.vae").read_bytes()
    header = vaecodec.info(data)
    assert (header["model"], header["format_version"]) == (model, version)
    assert DEFAULT_MODEL != model
    image = np.asarray(vaecodec.decompress(data))
    assert image.shape == crop.shape
    assert psnr(image, crop) > min_psnr


def test_new_files_use_the_default_model_and_beat_the_first_one(crop):
    for quality in (0, 1):
        old = (COMPAT / f"msh96-kodim23-crop-q{quality}.vae").read_bytes()
        new = vaecodec.compress(crop, quality=quality)
        assert vaecodec.info(new)["model"] == DEFAULT_MODEL
        # the newer weights code this crop in fewer bytes at a higher PSNR
        assert len(new) < len(old)
        assert psnr(np.asarray(vaecodec.decompress(new)), crop) > psnr(
            np.asarray(vaecodec.decompress(old)), crop)


def test_files_with_corrections_decode():
    """Format version 4 (session 52): msh96t at quality 8 on a 128 x 96 piece of kodim13
    (`kodim13[100:196, 200:328]`), where the pixel corrections took it from 32.5 to 38.8 dB."""
    from PIL import Image

    from .conftest import KODAK

    original = np.asarray(Image.open(KODAK / "kodim13.png").convert("RGB"))[100:196, 200:328]
    data = (COMPAT / "msh96t-kodim13-crop-q8-corrected.vae").read_bytes()
    header = vaecodec.info(data)
    assert (header["model"], header["format_version"]) == ("msh96t", 4)
    assert header["correction_bytes"] > 0
    assert psnr(np.asarray(vaecodec.decompress(data)), original) > 38.5


def test_files_with_dct_corrections_decode():
    """Format version 5 (session 53): msh96t at quality 8 on the same piece of kodim13, its
    latents at quality 4.5 and DCT corrections taking it to 39.7 dB (without them, at 8:
    32.5 dB)."""
    from PIL import Image

    from .conftest import KODAK

    original = np.asarray(Image.open(KODAK / "kodim13.png").convert("RGB"))[100:196, 200:328]
    data = (COMPAT / "msh96t-kodim13-crop-q8-v5.vae").read_bytes()
    header = vaecodec.info(data)
    assert (header["model"], header["format_version"]) == ("msh96t", 5)
    assert (header["quality"], header["latent_quality"]) == (8, 4.5)
    assert header["correction_bytes"] > 0
    assert psnr(np.asarray(vaecodec.decompress(data)), original) > 39.5
