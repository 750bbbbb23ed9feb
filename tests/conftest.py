import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT / "data" / "kodak"


@pytest.fixture(scope="session")
def kodim23() -> np.ndarray:
    return np.asarray(Image.open(KODAK / "kodim23.png").convert("RGB"))


@pytest.fixture(scope="session")
def crop(kodim23) -> np.ndarray:
    """A 192 x 256 piece of a Kodak image: big enough to be natural, small enough to be fast."""
    return np.ascontiguousarray(kodim23[100:292, 200:456])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


# The shipped model must reach at least this PSNR on every round trip in these tests.
MIN_PSNR = 22.0


def run_cli(*args, cwd=None):
    """Run the `vaecodec` command in a fresh process."""
    return subprocess.run([sys.executable, "-m", "vaecodec.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)
