"""Compare shipped models on photos through real files, never on Kodak: mean bpp (file sizes) and
PSNR (decoded images) per quality, each model's BD-rate and bytes per quality against the first,
and whether two models decode every file to the same image.

    python benchmarks/compare_files.py msh96s msh96t [--json out.json]
    python benchmarks/compare_files.py msh96t:no-correction msh96t

A name may carry compress options after colons: `no-correction` (`correction=False`) and
`no-filter` (`postfilter=False`), to compare the codec's parts with one model.

Where `compare_states.py` estimates rates from the training model's likelihoods, this goes
through `vaecodec.compress` and `decompress`, so it also sees what the likelihoods do not: the
tables (`vaecodec calibrate`), the post-filter, the file's overhead. The photos are the
training's 12 held-out ones plus training photos that a calibration with its default `--every
4` never counts (every 25th from the 5th whose index is not a multiple of 4), shrunk to at most
512 pixels, and with `--scale S` by S more (the photos are JPEGs: a scale of 0.7 washes out
their 8 x 8 grid, which a codec working in 8 x 8 blocks would otherwise find aligned with its
own). The models must be installed in `vaecodec/weights/`.
"""

import argparse
import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vaecodec  # noqa: E402
from vaecodec.metrics import bd_rate, psnr  # noqa: E402
from vaecodec.train import TrainConfig, list_images, split_holdout  # noqa: E402

QUALITIES = (0, 0.5, 1, 2, 3, 4, 4.5, 5, 6, 7, 7.5, 8)
OPTIONS = {"no-correction": ("correction", False), "no-filter": ("postfilter", False)}


def compress_options(name: str) -> dict:
    """`vaecodec.compress` keywords of a name such as "msh96t:no-correction"."""
    model, *flags = name.split(":")
    unknown = [f for f in flags if f not in OPTIONS]
    if unknown:
        raise SystemExit(f"unknown option {unknown[0]!r} (known: {', '.join(OPTIONS)})")
    return {"model": model, **dict(OPTIONS[f] for f in flags)}


def photo_rows(job: tuple[tuple[str, ...], str, float]) -> dict:
    """Per model, (bpp, PSNR, digest of the decoded image) at each quality for one photo."""
    models, path, scale = job
    image = Image.open(path).convert("RGB")
    image.thumbnail((512, 512))
    if scale != 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.LANCZOS)
    rgb = np.asarray(image)
    rows = {}
    for model in models:
        rows[model] = []
        for quality in QUALITIES:
            data = vaecodec.compress(rgb, quality=quality, **compress_options(model))
            decoded = np.asarray(vaecodec.decompress(data))
            rows[model].append((8 * len(data) / (rgb.shape[0] * rgb.shape[1]), psnr(rgb, decoded),
                                hashlib.sha256(decoded.tobytes()).hexdigest()))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--training-photos", type=int, default=24)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    training, held_out = split_holdout(list_images(args.data), TrainConfig.holdout)
    photos = held_out + [p for i, p in enumerate(training)
                         if i % 25 == 5 and i % 4][:args.training_photos]
    jobs = [(tuple(args.models), str(p), args.scale) for p in photos]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(photo_rows, jobs))
    print(f"{len(photos)} photos ({len(held_out)} held out)")
    curves = {}
    for model in args.models:
        curves[model] = np.array([[row[:2] for row in r[model]] for r in results]).mean(0)
        print(model, " ".join(f"q{q:g} {b:.4f}/{p:.3f}"
                              for q, (b, p) in zip(QUALITIES, curves[model])))
    first = args.models[0]
    report = {"photos": [p.name for p in photos], "scale": args.scale, "qualities": list(QUALITIES),
              "curves": {m: {"bpp": c[:, 0].tolist(), "psnr": c[:, 1].tolist()}
                         for m, c in curves.items()}, "against_first": {}}
    for model in args.models[1:]:
        bd = bd_rate(curves[first][:, 0], curves[first][:, 1],
                     curves[model][:, 0], curves[model][:, 1])
        sizes = 100 * (curves[model][:, 0] / curves[first][:, 0] - 1)
        same = [m for m in args.models if m != model and all(
            r[m][i][2] == r[model][i][2] for r in results for i in range(len(QUALITIES)))]
        print(f"{model} against {first}: BD-rate {bd:+.2f}%; bytes per quality "
              + " ".join(f"{s:+.2f}%" for s in sizes)
              + (f"; the same images as {', '.join(same)}" if same else ""))
        report["against_first"][model] = {"bd_rate": bd, "bytes": sizes.tolist(),
                                          "same_images_as": same}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
