"""Bad input: every failure is a VaecodecError subclass from the API, and one line with a
non-zero exit from the CLI, with no output file left behind."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import vaecodec
from vaecodec import format as vae_format

from .conftest import run_cli


@pytest.fixture(scope="module")
def small_file(crop) -> bytes:
    return vaecodec.compress(crop[:64, :64], quality=3)


def rewrite_header(data: bytes, **changes) -> bytes:
    """Change header fields and fix the checksum, as a forger would."""
    fields = list(vae_format._HEADER.unpack_from(data))
    names = ["magic", "version", "mode", "flags", "reserved", "model", "hash", "quality",
             "width", "height", "z", "y", "alpha", "icc"]
    for name, value in changes.items():
        fields[names.index(name)] = value
    fixed = vae_format._HEADER.pack(*fields)
    body = data[vae_format.HEADER_SIZE:]
    return fixed + struct.pack("<I", zlib.crc32(body, zlib.crc32(fixed))) + body


def test_truncated_files_fail_cleanly(small_file):
    for length in [0, 1, 3, 4, 5, 20, vae_format.HEADER_SIZE, len(small_file) - 1]:
        with pytest.raises(vaecodec.FormatError):
            vaecodec.decompress(small_file[:length])


def test_every_single_bit_flip_in_header_and_payload_is_caught(small_file):
    rng = np.random.default_rng(0)
    positions = list(range(vae_format.HEADER_SIZE)) + list(
        rng.integers(vae_format.HEADER_SIZE, len(small_file), 40))
    for position in positions:
        corrupt = bytearray(small_file)
        corrupt[position] ^= 1 << int(rng.integers(8))
        with pytest.raises(vaecodec.VaecodecError):
            vaecodec.decompress(bytes(corrupt))


def test_wrong_magic(small_file):
    with pytest.raises(vaecodec.FormatError, match="magic"):
        vaecodec.decompress(b"PNG!" + small_file[4:])


def test_newer_version(small_file):
    with pytest.raises(vaecodec.UnsupportedVersionError):
        vaecodec.decompress(rewrite_header(small_file, version=vae_format.FORMAT_VERSION + 1))


def test_quality_out_of_its_versions_range(small_file):
    for version, quality in [(2, 99), (2, 0), (3, 801), (1, 50)]:
        with pytest.raises(vaecodec.FormatError, match="quality"):
            vaecodec.decompress(rewrite_header(small_file, version=version, quality=quality))


def test_unknown_model(small_file):
    with pytest.raises(vaecodec.ModelMismatchError, match="unknown model"):
        vaecodec.decompress(rewrite_header(small_file, model=b"nosuch\0\0"))


def test_mismatched_weights_hash(small_file):
    with pytest.raises(vaecodec.ModelMismatchError, match="other weights"):
        vaecodec.decompress(rewrite_header(small_file, hash=b"\x00" * 8))


def test_absurd_size_is_refused_before_any_work(small_file):
    with pytest.raises(vaecodec.LimitError):
        vaecodec.decompress(rewrite_header(small_file, width=100_000, height=100_000))


def test_forged_payload_with_valid_checksum_never_crashes(small_file):
    rng = np.random.default_rng(1)
    start = vae_format.HEADER_SIZE
    for trial in range(60):
        body = bytearray(small_file[start:])
        body[rng.integers(len(body))] = rng.integers(256)
        forged = small_file[:start] + bytes(body)
        fixed = forged[:vae_format._HEADER.size]
        forged = fixed + struct.pack("<I", zlib.crc32(bytes(body), zlib.crc32(fixed))) + bytes(body)
        try:
            image = vaecodec.decompress(forged)
            assert image.size == (64, 64)
        except vaecodec.VaecodecError:
            pass


def test_bad_images_and_arguments(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for source in [tmp_path / "missing.png", tmp_path / "text.png", tmp_path / "empty.png",
                   tmp_path, 42, np.zeros((4, 4), np.float32)]:
        with pytest.raises(vaecodec.InputError):
            vaecodec.compress(source)
    for quality in [-0.5, 8.01, "high", float("nan")]:
        with pytest.raises(vaecodec.InputError):
            vaecodec.compress(np.zeros((8, 8, 3), np.uint8), quality=quality)


def test_image_over_pixel_limit(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    with pytest.raises(vaecodec.LimitError):
        vaecodec.compress(path, max_pixels=50_000)


@pytest.mark.parametrize("content", [b"", b"VAEC", b"garbage" * 10, None])
def test_cli_bad_vae_gives_one_line_and_no_output(tmp_path, small_file, content):
    source = tmp_path / "bad.vae"
    source.write_bytes(content if content is not None else small_file[:-3])
    before = source.read_bytes()
    result = run_cli("decompress", source)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("vaecodec: ")
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.vae"]
    assert source.read_bytes() == before


def test_cli_non_image_and_missing_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for name in ["notes.txt", "missing.png"]:
        result = run_cli("compress", tmp_path / name)
        assert result.returncode == 1 and result.stderr.startswith("vaecodec: ")
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_info_on_bad_file(tmp_path):
    (tmp_path / "x.vae").write_bytes(b"VAEC\x07")
    result = run_cli("info", tmp_path / "x.vae")
    assert result.returncode == 1 and "newer" in result.stderr


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (its data is a few bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_at_once(tmp_path, small_file):
    (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    (tmp_path / "claim.vae").write_bytes(rewrite_header(small_file, width=100_000, height=100_000))
    for command, name in (("compress", "bomb.png"), ("decompress", "claim.vae")):
        result = run_cli(command, tmp_path / name)
        assert result.returncode == 1 and "exceeds the limit" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    # Raising the limit on purpose gets past it; then the file is still caught, before any
    # allocation of the claimed size, because its sections are far too short for that image.
    result = run_cli("decompress", tmp_path / "claim.vae", "--max-pixels", str(10**10))
    assert result.returncode == 1 and "cannot hold" in result.stderr, result.stderr
    result = run_cli("compress", tmp_path / "bomb.png", "--max-pixels", str(10**10))
    assert result.returncode == 1 and "not a readable image" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png", "claim.vae"]


def test_header_size_is_checked_against_the_sections(small_file):
    # 4096 x 4096 is within the default limit, but the z section of a 64 x 64 file is too
    # short for it; refused without decoding.
    with pytest.raises(vaecodec.FormatError, match="cannot hold"):
        vaecodec.decompress(rewrite_header(small_file, width=4096, height=4096))
