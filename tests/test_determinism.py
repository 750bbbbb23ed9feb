"""Decoding must not depend on floating-point luck: the symbols a decoder recovers are exactly
the encoder's, whatever threads, precision or tiles either side used."""

import numpy as np
import pytest
import torch

import vaecodec
from vaecodec import codec, integer_net
from vaecodec.weights import load_model

from .conftest import MIN_PSNR, psnr


def encoded_symbols(image, **options):
    bundle = load_model()
    coded = codec.encode_latents(bundle, image, 4.0, options.get("device", "cpu"),
                                 options.get("dtype", torch.float32), options.get("tile", 512))
    return coded


def decoded_symbols(data):
    _, _, coded, _ = codec.read(data)
    return coded


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_symbols_survive_any_thread_count_and_precision(kodim23, threads, precision):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = vaecodec.compress(kodim23, quality=4, precision=precision)
        dtype = getattr(torch, precision)
        sent = encoded_symbols(kodim23, dtype=dtype)
    finally:
        torch.set_num_threads(before)
    # Decode under the other thread count and the other precision.
    torch.set_num_threads(3 - threads)
    try:
        received = decoded_symbols(data)
        other = "float64" if precision == "float32" else "float32"
        image = vaecodec.decompress(data, precision=other)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(received.z, sent.z)
    assert np.array_equal(received.residual, sent.residual)
    assert np.array_equal(received.means, sent.means)
    assert np.array_equal(received.scale_index, sent.scale_index)
    assert psnr(np.asarray(image), kodim23) > MIN_PSNR


def test_entropy_parameters_identical_across_threads_and_tiles():
    bundle = load_model()
    z = np.random.default_rng(0).integers(-3, 4, (1, bundle.meta["config"]["H"], 13, 9))
    results = []
    for threads, rows in [(1, 16), (2, 16), (2, 3), (1, 1), (2, 64)]:
        torch.set_num_threads(threads)
        old = integer_net.TILE_ROWS
        integer_net.TILE_ROWS = rows
        try:
            results.append(bundle.hyper(z))
        finally:
            integer_net.TILE_ROWS = old
    torch.set_num_threads(2)
    for means, indices in results[1:]:
        assert np.array_equal(means, results[0][0])
        assert np.array_equal(indices, results[0][1])


def test_tiles_change_nothing_visible(kodim23):
    whole = vaecodec.compress(kodim23, quality=5, tile=1024)
    tiled = vaecodec.compress(kodim23, quality=5, tile=128)
    reference = np.asarray(vaecodec.decompress(whole, tile=1024))
    for data in (whole, tiled):
        for tile in (64, 192, 1024):
            image = np.asarray(vaecodec.decompress(data, tile=tile))
            assert abs(psnr(image, kodim23) - psnr(reference, kodim23)) < 0.05
    # Decoding the same file with different tiles differs at most by float rounding.
    small = np.asarray(vaecodec.decompress(whole, tile=64)).astype(int)
    assert np.abs(small - reference.astype(int)).max() <= 1
    assert decoded_symbols(tiled).residual.shape == decoded_symbols(whole).residual.shape
