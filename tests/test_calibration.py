"""Measured tables (`vaecodec calibrate`): the same images from fewer bits, and a z table set per
quality that encoder and decoder pick alike."""

import numpy as np
import pytest
from PIL import Image

import vaecodec
from vaecodec import weights
from vaecodec.calibration import QUALITIES, calibrate

from .conftest import KODAK, run_cli


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The default model calibrated on two Kodak crops: a test, not a model to ship (shipped
    tables are measured on training photos only)."""
    folder = tmp_path_factory.mktemp("calibration")
    photos = []
    for name in ("kodim03", "kodim19"):
        image = Image.open(KODAK / f"{name}.png").convert("RGB").crop((0, 0, 384, 256))
        image.save(folder / f"{name}.png")
        photos.append(folder / f"{name}.png")
    out = calibrate(weights.available_models()[weights.DEFAULT_MODEL], photos,
                    folder / "calibrated.npz")
    return out, photos


@pytest.fixture
def with_model(calibrated, monkeypatch):
    """The calibrated file installed as model 'calib'."""
    path, _ = calibrated
    shipped = weights.available_models()
    monkeypatch.setattr(weights, "available_models", lambda: {"calib": path, **shipped})
    weights.load_model.cache_clear()
    yield "calib"
    weights.load_model.cache_clear()


def test_calibrated_tables_code_the_same_images_in_fewer_bits(calibrated, with_model):
    _, photos = calibrated
    image = np.asarray(Image.open(photos[0]))
    sizes = {"plain": 0, "measured": 0}
    for quality in (0, 4.5, 8):     # without corrections, so that the latents are at 8 too
        plain = vaecodec.compress(image, quality=quality, correction=False)
        measured = vaecodec.compress(image, quality=quality, model=with_model, correction=False)
        assert vaecodec.info(measured)["model"] == "calib"
        assert np.array_equal(np.asarray(vaecodec.decompress(measured)),
                              np.asarray(vaecodec.decompress(plain)))
        sizes["plain"] += len(plain)
        sizes["measured"] += len(measured)
    # fitted on this very image, so its tables must save bits on it (in all: one file's
    # sections round up to whole 32-bit words)
    assert sizes["measured"] < sizes["plain"]


def test_each_quality_codes_z_with_its_nearest_integer_tables(with_model):
    bundle = weights.load_model(with_model)
    assert len(bundle.z_tables) == len(QUALITIES) * bundle.config.H
    levels = [bundle.z_table_level(q) for q in (0, 0.49, 0.5, 3.25, 7.5, 8)]
    assert levels == [0, 0, 1, 3, 8, 8]
    # a file made before calibration has one set, used at every quality
    assert weights.load_model("msh96s").z_table_level(8) == 0


def test_a_file_with_the_wrong_number_of_z_tables_is_refused(calibrated, tmp_path):
    import io
    import json

    path, _ = calibrated
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta["z_table_levels"] = 3
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(buffer.getvalue())
    with pytest.raises(vaecodec.ModelMismatchError, match="z tables"):
        weights.load_file(broken)


def test_calibrate_command(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    source = Image.open(KODAK / "kodim03.png").convert("RGB")
    for n in range(13):     # twelve are held out, as training holds them out
        source.crop((40 * n, 0, 40 * n + 96, 64)).save(folder / f"p{n:02d}.png")
    out = tmp_path / "calibrated.npz"
    result = run_cli("calibrate", weights.available_models()["msh96s"], out, "--data", folder)
    assert result.returncode == 0, result.stderr
    bundle = weights.load_file(out)
    assert bundle.meta["calibration"]["photos"] == 1
    assert bundle.z_table_level(8) == 8

    missing = run_cli("calibrate", tmp_path / "none.npz", tmp_path / "x.npz", "--data", folder)
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr and "cannot read weights file" in missing.stderr
    assert not (tmp_path / "x.npz").exists()
