"""How well the anomaly score finds pasted anomalies on Kodak, against a simple baseline.

    python benchmarks/anomaly_eval.py [--images 24] [--quality 4] [--json out.json]

Each Kodak image gets one 96 x 96 anomaly per kind, at a seeded random place: a patch of
another Kodak image, Gaussian noise (sigma 40), black text, a blur (radius 4) and a flat patch
of the region's mean colour. Reported per kind: pixel-level AUROC (score map against the
region's mask, mean over images) and image-level AUROC (the image score of the altered images
against the 24 clean ones). The baseline is local variance over 16 x 16 windows, scored the
same way.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vaecodec  # noqa: E402
from vaecodec.anomaly import box_mean, robust_z  # noqa: E402

SIZE = 96
KINDS = ("patch", "noise", "text", "blur", "flat")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    positives = labels.sum()
    negatives = len(labels) - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def add_anomaly(image: np.ndarray, kind: str, other: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    top, left = int(rng.integers(0, height - SIZE)), int(rng.integers(0, width - SIZE))
    box = (slice(top, top + SIZE), slice(left, left + SIZE))
    out = image.copy()
    region = out[box]
    if kind == "patch":
        source_top = int(rng.integers(0, other.shape[0] - SIZE))
        source_left = int(rng.integers(0, other.shape[1] - SIZE))
        out[box] = other[source_top:source_top + SIZE, source_left:source_left + SIZE]
    elif kind == "noise":
        out[box] = np.clip(region + rng.normal(0, 40, region.shape), 0, 255).astype(np.uint8)
    elif kind == "text":
        patch = Image.fromarray(region)
        draw = ImageDraw.Draw(patch)
        font = ImageFont.load_default(size=22)
        for line in range(3):
            draw.text((4, 4 + 30 * line), "VAE text"[line:line + 6], fill=(0, 0, 0), font=font)
        out[box] = np.asarray(patch)
    elif kind == "blur":
        out[box] = np.asarray(Image.fromarray(region).filter(ImageFilter.GaussianBlur(4)))
    elif kind == "flat":
        out[box] = region.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    mask = np.zeros((height, width), bool)
    mask[box] = True
    return out, mask


def local_variance_score(image: np.ndarray) -> np.ndarray:
    gray = image.astype(np.float64).mean(axis=2)
    return robust_z(box_mean(gray**2, 16) - box_mean(gray, 16) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--quality", type=float, default=4.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    paths = sorted((ROOT / "data" / "kodak").glob("*.png"))[:args.images]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    rng = np.random.default_rng(2026)
    methods = {
        "vaecodec": lambda im: vaecodec.anomaly_map(im, quality=args.quality).score,
        "local variance": local_variance_score,
    }
    clean = {name: [float(np.percentile(f(im), 99.9)) for im in images]
             for name, f in methods.items()}
    results = {}
    for kind in KINDS:
        pixel = {name: [] for name in methods}
        altered = {name: [] for name in methods}
        for i, image in enumerate(images):
            anomalous, mask = add_anomaly(image, kind, images[(i + 7) % len(images)], rng)
            for name, f in methods.items():
                score = f(anomalous)
                pixel[name].append(auroc(score, mask))
                altered[name].append(float(np.percentile(score, 99.9)))
        results[kind] = {
            name: {"pixel_auroc": float(np.mean(pixel[name])),
                   "image_auroc": auroc(np.r_[altered[name], clean[name]],
                                        np.r_[np.ones(len(images)), np.zeros(len(images))])}
            for name in methods}
        print(kind, json.dumps(results[kind]), flush=True)
    print("\n| anomaly | pixel AUROC vaecodec | pixel AUROC local variance | "
          "image AUROC vaecodec | image AUROC local variance |")
    print("|---|---:|---:|---:|---:|")
    for kind, row in results.items():
        print(f"| {kind} | {row['vaecodec']['pixel_auroc']:.3f} | "
              f"{row['local variance']['pixel_auroc']:.3f} | {row['vaecodec']['image_auroc']:.3f} | "
              f"{row['local variance']['image_auroc']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
