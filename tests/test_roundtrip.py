"""Round trips through the public API: sizes, modes, qualities, exactness."""

import numpy as np
import pytest
from PIL import Image, ImageCms

import vaecodec
from vaecodec import codec, entropy_coding
from vaecodec.weights import load_model

from .conftest import MIN_PSNR, psnr


@pytest.mark.parametrize("quality", [1, 2, 3, 4, 5, 6, 7, 8])
def test_kodak_round_trip_every_quality(kodim23, quality):
    data = vaecodec.compress(kodim23, quality=quality)
    image = vaecodec.decompress(data)
    assert image.size == (768, 512) and image.mode == "RGB"
    assert psnr(np.asarray(image), kodim23) > MIN_PSNR


def test_quality_orders_size_and_fidelity(crop):
    sizes, scores = [], []
    for quality in (0, 0.5, 1, 2.5, 4, 8):
        data = vaecodec.compress(crop, quality=quality)
        sizes.append(len(data))
        scores.append(psnr(np.asarray(vaecodec.decompress(data)), crop))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert scores == sorted(scores)


def test_qualities_below_1_are_format_version_3_and_the_others_version_2(kodim23):
    """Below 1 the scale extrapolates the trained gains: such files say so with version 3,
    which older readers refuse as newer; files of quality 1 to 8 without corrections stay
    version 2."""
    for quality, version in [(0, 3), (0.99, 3), (1, 2), (8, 2)]:
        data = vaecodec.compress(kodim23[:128, :128], quality=quality, correction=False)
        assert vaecodec.info(data)["format_version"] == version
        assert vaecodec.info(data)["quality"] == quality
    data = vaecodec.compress(kodim23, quality=0)
    assert 8 * len(data) / kodim23[..., 0].size < 0.15
    assert psnr(np.asarray(vaecodec.decompress(data)), kodim23) > MIN_PSNR


def test_decoder_matches_encoder_reconstruction_bit_for_bit(crop):
    bundle = load_model()
    data = vaecodec.compress(crop, quality=3.5)
    transforms = codec.transforms_for(bundle, "cpu", "float32", None)
    coded = codec.encode_latents(bundle, crop, 3.5, transforms)
    expected = codec.synthesize(bundle, coded, 3.5, *crop.shape[:2], transforms)
    expected = codec.filter_section(expected, crop, 3.5)[1]   # with its post-filter, if any
    assert np.array_equal(np.asarray(vaecodec.decompress(data)), expected)


def test_file_size_matches_estimated_rate(kodim23):
    bundle = load_model()
    data = vaecodec.compress(kodim23, quality=4)
    header, _, coded, sections = codec.read(data)
    z_index = codec.z_table_index(bundle, coded.z.shape, header.quality)
    estimate = (entropy_coding.estimate_bits(coded.z, z_index, bundle.z_tables)
                + entropy_coding.estimate_bits(coded.residual, coded.scale_index, bundle.y_tables))
    payload = len(sections["z"]) + len(sections["y"])
    assert payload * 8 <= estimate * 1.01 + 64
    assert payload * 8 >= estimate
    assert len(data) == payload + len(sections["filter"]) + vaecodec.format.HEADER_SIZE


@pytest.mark.parametrize("height,width", [(1, 1), (17, 33), (513, 769)])
def test_any_size(height, width, kodim23):
    rng = np.random.default_rng(0)
    tall = np.concatenate([kodim23, kodim23[::-1]], axis=0)
    array = np.ascontiguousarray(np.tile(tall, (1, 2, 1))[:height, :width])
    if height == 1:
        array = rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)
    image = vaecodec.decompress(vaecodec.compress(array, quality=6))
    assert image.size == (width, height)
    if height > 1:
        assert psnr(np.asarray(image), array) > MIN_PSNR


def test_grayscale_comes_back_grayscale(crop):
    gray = Image.fromarray(crop).convert("L")
    image = vaecodec.decompress(vaecodec.compress(gray, quality=5))
    assert image.mode == "L"
    assert psnr(np.asarray(image), np.asarray(gray)) > MIN_PSNR


def test_rgba_keeps_alpha_losslessly(crop):
    alpha = np.random.default_rng(1).integers(0, 256, crop.shape[:2], dtype=np.uint8)
    rgba = np.dstack([crop, alpha])
    image = vaecodec.decompress(vaecodec.compress(rgba, quality=4))
    assert image.mode == "RGBA"
    assert np.array_equal(np.asarray(image)[:, :, 3], alpha)


def test_gray_with_alpha(crop):
    la = Image.fromarray(crop).convert("LA")
    image = vaecodec.decompress(vaecodec.compress(la))
    assert image.mode == "LA"
    assert np.array_equal(np.asarray(image)[:, :, 1], np.asarray(la)[:, :, 1])


def test_sixteen_bit_input_warns_and_codes(tmp_path, crop):
    gray16 = (np.asarray(Image.fromarray(crop).convert("L")).astype(np.uint16) * 257)
    path = tmp_path / "deep.png"
    Image.fromarray(gray16).save(path)
    with pytest.warns(UserWarning, match="16-bit"):
        data = vaecodec.compress(path)
    image = vaecodec.decompress(data)
    assert image.mode == "L"
    assert psnr(np.asarray(image), gray16 // 257) > MIN_PSNR


def test_sixteen_bit_rgb_warns(tmp_path):
    import struct
    import zlib

    height, width = 8, 10
    rows = [b"\x00" + (np.arange(width * 3, dtype=">u2") * 2000).tobytes() for _ in range(height)]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "rgb48.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    with pytest.warns(UserWarning, match="16-bit"):
        data = vaecodec.compress(path)
    assert vaecodec.decompress(data).size == (width, height)


def test_icc_profile_is_carried(tmp_path, crop):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "with_icc.png"
    Image.fromarray(crop).save(path, icc_profile=profile)
    image = vaecodec.decompress(vaecodec.compress(path))
    assert image.info.get("icc_profile") == profile


def test_paths_pil_and_arrays_give_the_same_file(crop, tmp_path):
    path = tmp_path / "crop.png"
    Image.fromarray(crop).save(path)
    from_array = vaecodec.compress(crop)
    assert vaecodec.compress(path) == from_array
    assert vaecodec.compress(Image.fromarray(crop)) == from_array


def test_info_reads_the_header(crop):
    data = vaecodec.compress(crop, quality=2.25)
    fields = vaecodec.info(data)
    assert fields["width"] == 256 and fields["height"] == 192
    assert fields["quality"] == 2.25 and fields["mode"] == "RGB"
    assert fields["file_bytes"] == len(data)
