"""A 6000 x 4000 photo round-trips in tiles within 4 GB of resident memory."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import resource, sys, numpy as np
from PIL import Image
import vaecodec
from vaecodec.metrics import psnr
tile = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
image = np.tile(tile, (8, 8, 1))[:4000, :6000]
data = vaecodec.compress(image, quality=4)
decoded = np.asarray(vaecodec.decompress(data))
assert decoded.shape == image.shape
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{len(data)} {psnr(image, decoded):.2f} {peak_mb:.0f}")
"""


@pytest.mark.slow
def test_6000_by_4000_round_trip_under_4_gb():
    from .conftest import KODAK

    result = subprocess.run([sys.executable, "-c", SCRIPT, str(KODAK / "kodim05.png")],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    size, quality, peak_mb = result.stdout.split()
    print(f"6000x4000: {size} bytes, {quality} dB, peak RSS {peak_mb} MB")
    assert float(peak_mb) < 4096
    assert float(quality) > 22
