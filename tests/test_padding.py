"""Images whose sides are not multiples of 64: the padding the decoder crops away costs few bits
and the latents only it depends on are free."""

from dataclasses import replace

import numpy as np

import vaecodec
from vaecodec import codec

from .conftest import MIN_PSNR, psnr


def test_one_row_more_than_a_multiple_of_64_costs_little(kodim23, crop):
    """`crop` is kodim23's 192 x 256 from (100, 200): one row more is coded as 256 rows, 63
    of them padding. Repeating the last row there cost 19% more bytes than `crop` alone; the
    blurred padding and the zeroed unseen latents cost 13%."""
    taller = np.ascontiguousarray(kodim23[100:293, 200:456])
    wider = np.ascontiguousarray(kodim23[100:292, 200:457])
    base = len(vaecodec.compress(crop, quality=4))
    for image in (taller, wider):
        data = vaecodec.compress(image, quality=4)
        assert len(data) < 1.16 * base
        decoded = np.asarray(vaecodec.decompress(data))
        assert decoded.shape == image.shape and psnr(decoded, image) > MIN_PSNR


def test_unseen_latents_change_no_pixel_and_their_neighbours_do(kodim23):
    image = np.ascontiguousarray(kodim23[:70, :80])      # padded to 128 x 128: 8 x 8 latents
    data = vaecodec.compress(image, quality=4, postfilter=False)
    _, bundle, coded, _ = codec.read(data)
    transforms = codec.NumpyTransforms(bundle, np.float32)
    shown = codec.synthesize(bundle, coded, 4.0, 70, 80, transforms)
    assert np.array_equal(shown, np.asarray(vaecodec.decompress(data)))
    unseen = codec.unseen_latents(70, 80, coded.residual.shape)
    assert unseen.any() and not unseen.all()
    assert not coded.residual[0][:, unseen].any()        # stored as the cheapest symbol

    def shown_with(mask):
        residual = coded.residual.copy()
        residual[0][:, mask] += 7
        return codec.synthesize(bundle, replace(coded, residual=residual), 4.0, 70, 80,
                                transforms)

    assert np.array_equal(shown_with(unseen), shown)
    # SYNTHESIS_REACH is tight: the first row and column that count do change the image
    rows, cols = np.nonzero(~unseen)
    last_row = np.zeros_like(unseen)
    last_row[rows.max()] = True
    last_col = np.zeros_like(unseen)
    last_col[:, cols.max()] = True
    assert not np.array_equal(shown_with(last_row), shown)
    assert not np.array_equal(shown_with(last_col), shown)
