"""How much rate the y tables' shape leaves: the bits of y's residuals under the shipped Gaussian
tables against tables measured from the residuals themselves, one per scale index.

    python benchmarks/y_table_fit.py [--model msh96d] [--workers 2]

Every residual round(y - mean) is coded under the zero-mean Gaussian table of its scale index.
If the residuals at a scale index are not Gaussian (heavier tails, a sharper peak), a table
measured on photos codes them in fewer bits, at no cost to the image. The tables are measured on
every 10th training photo and judged on others (the 12 held out and every 25th training photo
from the 5th, none of them among the fitting ones), all shrunk to at most 512 pixels; each
measured table is smoothed towards the Gaussian one (as if 100 residuals had followed it), so
that no value goes without a probability. Never run on Kodak: what it measures could be shipped.
"""

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaecodec.architecture import SCALE_LEVELS  # noqa: E402
from vaecodec.codec import NumpyTransforms, encode_latents, unseen_latents  # noqa: E402
from vaecodec.train import TrainConfig, list_images, split_holdout  # noqa: E402
from vaecodec.weights import DEFAULT_MODEL, load_model  # noqa: E402

QUALITIES = tuple(range(9))
OFFSET = 2048                 # residuals counted from -OFFSET to OFFSET - 1 (beyond: clipped)
SMOOTHING = 100               # pseudo-counts of the Gaussian table in each measured table


def residual_counts(job: tuple[str, str]) -> np.ndarray:
    """(qualities, scale indices, 2 OFFSET) counts of one photo's residuals."""
    model, path = job
    bundle = load_model(model)
    transforms = NumpyTransforms(bundle, np.float32)
    image = Image.open(path).convert("RGB")
    image.thumbnail((512, 512))
    rgb = np.asarray(image)
    counts = np.zeros((len(QUALITIES), SCALE_LEVELS, 2 * OFFSET), np.int64)
    for n, quality in enumerate(QUALITIES):
        coded = encode_latents(bundle, rgb, float(quality), transforms)
        # as in calibration: the zeros that only the padding depends on are not the tables'
        seen = ~unseen_latents(*rgb.shape[:2], coded.residual.shape)
        values = np.clip(coded.residual[0][:, seen] + OFFSET, 0, 2 * OFFSET - 1)
        np.add.at(counts[n], (coded.scale_index[0][:, seen], values), 1)
    return counts


def gaussian_probabilities(model: str) -> np.ndarray:
    """(scale indices, 2 OFFSET): the shipped tables' probabilities (the escape left out)."""
    tables = load_model(model).y_tables
    probabilities = np.full((len(tables), 2 * OFFSET), 1e-12)
    for k in range(len(tables)):
        freqs = tables.table(k).astype(np.float64)
        first = tables.lows[k] + OFFSET
        probabilities[k, first:first + len(freqs) - 1] = freqs[:-1] / freqs.sum()
    return probabilities


def bits(probabilities: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per quality, the information content of `counts` under `probabilities`."""
    return -(counts * np.log2(np.maximum(probabilities, 1e-300))).sum(axis=(-1, -2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    training, held_out = split_holdout(list_images(args.data), TrainConfig.holdout)
    judged = held_out + training[5::25]
    fitting = [p for p in training[::10] if p not in judged]
    print(f"{len(fitting)} photos to measure the tables on, {len(judged)} to judge them on")
    with ProcessPoolExecutor(args.workers) as pool:
        fit = sum(pool.map(residual_counts, [(args.model, str(p)) for p in fitting]))
        judge = sum(pool.map(residual_counts, [(args.model, str(p)) for p in judged]))
    gaussian = gaussian_probabilities(args.model)
    pooled = fit.sum(0)
    measured = (pooled + SMOOTHING * gaussian) / (pooled.sum(1, keepdims=True) + SMOOTHING)
    oracle = judge / np.maximum(judge.sum(2, keepdims=True), 1)   # the judged photos' own
    shipped = bits(gaussian[None], judge)
    print("quality | y KB, shipped tables | measured tables | the judged photos' own tables")
    for n, quality in enumerate(QUALITIES):
        print(f"{quality} | {shipped[n] / 8192:.1f} | "
              f"{100 * (bits(measured[None], judge[n:n + 1])[0] / shipped[n] - 1):+.2f}% | "
              f"{100 * (bits(oracle[n:n + 1], judge[n:n + 1])[0] / shipped[n] - 1):+.2f}%")
    total = bits(measured[None], judge).sum() / shipped.sum() - 1
    print(f"all qualities: measured tables {100 * total:+.2f}% of y's bits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
