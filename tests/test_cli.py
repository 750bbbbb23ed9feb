"""The command line: naming, batches, --force, atomic outputs, info."""

import json

import numpy as np
from PIL import Image

from .conftest import MIN_PSNR, psnr, run_cli


def test_compress_decompress_info(tmp_path, crop):
    source = tmp_path / "photo.png"
    Image.fromarray(crop).save(source)
    original = source.read_bytes()
    result = run_cli("compress", source, "--quality", "4.5")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "photo.vae").exists()
    assert source.read_bytes() == original

    info = run_cli("info", tmp_path / "photo.vae", "--json")
    fields = json.loads(info.stdout)
    assert fields["quality"] == 4.5 and fields["width"] == 256

    back = tmp_path / "back.png"
    result = run_cli("decompress", tmp_path / "photo.vae", "-o", back)
    assert result.returncode == 0, result.stderr
    # outputs get the usual permissions, not the private ones of a temporary file
    assert back.stat().st_mode & 0o777 == source.stat().st_mode & 0o777
    assert psnr(np.asarray(Image.open(back)), crop) > MIN_PSNR


def test_existing_output_is_skipped_unless_forced(tmp_path, crop):
    source = tmp_path / "a.png"
    Image.fromarray(crop[:64, :64]).save(source)
    (tmp_path / "a.vae").write_bytes(b"keep me")
    result = run_cli("compress", source)
    assert result.returncode == 0 and "exists, skipped" in result.stderr
    assert (tmp_path / "a.vae").read_bytes() == b"keep me"
    result = run_cli("compress", source, "--force")
    assert result.returncode == 0
    assert (tmp_path / "a.vae").read_bytes()[:4] == b"VAEC"


def test_batch_into_directory(tmp_path, crop):
    names = ["a.png", "b.jpg", "c.bmp"]
    for i, name in enumerate(names):
        Image.fromarray(crop[:64, 64 * i:64 * i + 64]).save(tmp_path / name)
    out = tmp_path / "out"
    result = run_cli("compress", *(tmp_path / n for n in names), "-d", out, "--quality", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.vae", "b.vae", "c.vae"]
    result = run_cli("decompress", *sorted(out.iterdir()), "-d", tmp_path / "back")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["a.png", "b.png", "c.png"]


def test_one_bad_input_does_not_stop_the_batch(tmp_path, crop):
    Image.fromarray(crop[:64, :64]).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_text("nope")
    result = run_cli("compress", tmp_path / "bad.png", tmp_path / "good.png", "-q")
    assert result.returncode == 1
    assert (tmp_path / "good.vae").exists() and not (tmp_path / "bad.vae").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_output_flag_with_several_inputs_is_refused(tmp_path):
    result = run_cli("compress", "a.png", "b.png", "-o", "x.vae", cwd=tmp_path)
    assert result.returncode == 1 and "-d" in result.stderr


def test_bad_quality_is_a_usage_error(tmp_path):
    result = run_cli("compress", "a.png", "--quality", "9", cwd=tmp_path)
    assert result.returncode == 2
