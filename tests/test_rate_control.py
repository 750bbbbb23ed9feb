"""Rate control: files of the size or PSNR asked for."""

import numpy as np
import pytest

import vaecodec
from vaecodec.rate_control import parse_size

from .conftest import psnr


def test_parse_size():
    assert parse_size(40000) == 40000
    assert parse_size("40KB") == 40 * 1024
    assert parse_size("1.5MB") == int(1.5 * 1024**2)
    assert parse_size("512") == 512
    for bad in ("", "ten", "-5", "0", "5GBX"):
        with pytest.raises(vaecodec.InputError):
            parse_size(bad)


@pytest.fixture(scope="module")
def range_of_sizes(crop):
    return len(vaecodec.compress(crop, quality=0)), len(vaecodec.compress(crop, quality=8))


def test_target_size_is_never_exceeded_and_close(crop, range_of_sizes):
    smallest, largest = range_of_sizes
    for fraction in (0.3, 0.6):
        target = int(smallest + fraction * (largest - smallest))
        data = vaecodec.compress(crop, target_size=target)
        assert len(data) <= target
        assert len(data) >= 0.97 * target or vaecodec.info(data)["quality"] == 8


def test_target_bpp(crop, range_of_sizes):
    smallest, largest = range_of_sizes
    bpp = 8 * (smallest + largest) / 2 / (crop.shape[0] * crop.shape[1])
    data = vaecodec.compress(crop, target_bpp=bpp)
    assert 8 * len(data) / (crop.shape[0] * crop.shape[1]) <= bpp


def test_target_psnr_is_met(crop):
    low = psnr(np.asarray(vaecodec.decompress(vaecodec.compress(crop, quality=1))), crop)
    high = psnr(np.asarray(vaecodec.decompress(vaecodec.compress(crop, quality=8))), crop)
    target = (low + high) / 2
    data = vaecodec.compress(crop, target_psnr=target)
    assert psnr(np.asarray(vaecodec.decompress(data)), crop) >= target
    assert 1 < vaecodec.info(data)["quality"] < 8


def test_impossible_targets(crop, range_of_sizes):
    with pytest.raises(vaecodec.InputError, match="smallest file"):
        vaecodec.compress(crop, target_size=range_of_sizes[0] - 1)
    with pytest.raises(vaecodec.InputError, match="above what this image reaches"):
        vaecodec.compress(crop, target_psnr=99)
    with pytest.raises(vaecodec.InputError, match="one target"):
        vaecodec.compress(crop, target_size=1000, target_psnr=30)
