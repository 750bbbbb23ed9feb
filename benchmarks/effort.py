"""Encoder effort on Kodak: file size, PSNR and encode time of each effort level.

    python benchmarks/effort.py [--images kodim03,kodim09,...] [--qualities 2,4,6,8] \
        [--efforts 0,1,2,3] [--out benchmarks/results/effort]

Every image is compressed at every quality and effort through `vaecodec.compress` (real files)
and decoded with `vaecodec.decompress`. Writes `effort.json` (every measurement) and
`effort.md` (per level: BD-rate on PSNR against effort 0, mean bpp and PSNR change, median
encode seconds per image), and prints the table.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vaecodec  # noqa: E402
from vaecodec.metrics import bd_rate, psnr  # noqa: E402
from vaecodec.weights import load_model  # noqa: E402

DEFAULT_IMAGES = "kodim03,kodim09,kodim15,kodim21"


def measure(images: dict, qualities, efforts) -> list[dict]:
    rows = []
    for name, image in images.items():
        for quality in qualities:
            for effort in efforts:
                start = time.perf_counter()
                data = vaecodec.compress(image, quality=quality, effort=effort)
                seconds = time.perf_counter() - start
                decoded = np.asarray(vaecodec.decompress(data))
                rows.append({"image": name, "quality": quality, "effort": effort,
                             "bytes": len(data), "bpp": 8 * len(data) / image[..., 0].size,
                             "psnr": psnr(image, decoded), "encode_s": seconds})
                print(f"{name} q{quality:g} effort {effort}: {rows[-1]['bpp']:.4f} bpp "
                      f"{rows[-1]['psnr']:.3f} dB {seconds:.1f} s", flush=True)
    return rows


def summarize(rows: list[dict], efforts) -> list[dict]:
    """Per effort level: mean per-image BD-rate against effort 0, mean changes, time."""
    names = sorted({r["image"] for r in rows})

    def curve(name, effort):
        points = sorted((r["quality"], r["bpp"], r["psnr"]) for r in rows
                        if r["image"] == name and r["effort"] == effort)
        return [p[1] for p in points], [p[2] for p in points]

    summary = []
    for effort in efforts:
        level = [r for r in rows if r["effort"] == effort]
        base = {(r["image"], r["quality"]): r for r in rows if r["effort"] == 0}
        summary.append({
            "effort": effort,
            "bd_rate": float(np.mean([bd_rate(*curve(n, 0), *curve(n, effort)) for n in names])),
            "bytes_change": float(np.mean([r["bytes"] / base[r["image"], r["quality"]]["bytes"] - 1
                                           for r in level])),
            "psnr_change": float(np.mean([r["psnr"] - base[r["image"], r["quality"]]["psnr"]
                                          for r in level])),
            "encode_s": statistics.median(r["encode_s"] for r in level),
        })
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", default=DEFAULT_IMAGES)
    parser.add_argument("--qualities", default="2,4,6,8")
    parser.add_argument("--efforts", default="0,1,2,3")
    parser.add_argument("--folder", default=str(ROOT / "data" / "kodak"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "effort"))
    args = parser.parse_args()
    images = {n: np.asarray(Image.open(Path(args.folder) / f"{n}.png").convert("RGB"))
              for n in args.images.split(",")}
    qualities = [float(q) for q in args.qualities.split(",")]
    efforts = [int(e) for e in args.efforts.split(",")]
    if efforts[0] != 0:
        parser.error("--efforts must start with 0, the baseline")
    vaecodec.decompress(vaecodec.compress(next(iter(images.values()))[:64, :64], effort=1))
    rows = measure(images, qualities, efforts)
    summary = summarize(rows, efforts)
    bundle = load_model()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": bundle.model_id, "weights_hash": bundle.weights_hash.hex(),
              "training_steps": bundle.meta.get("step"), "images": list(images),
              "qualities": qualities, "summary": summary, "measurements": rows}
    (out / "effort.json").write_text(json.dumps(record, indent=1))
    lines = [f"Encoder effort, model {bundle.model_id} ({bundle.meta.get('step')} training "
             f"steps, weights {bundle.weights_hash.hex()}), Kodak {', '.join(images)}, "
             f"qualities {args.qualities}.",
             "Command: `python benchmarks/effort.py " + " ".join(sys.argv[1:]) + "`", "",
             "| effort | BD-rate vs effort 0 | bytes | PSNR | encode s/image (median) |",
             "|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['effort']} | {s['bd_rate']:+.2f}% | {100 * s['bytes_change']:+.2f}% "
                     f"| {s['psnr_change']:+.3f} dB | {s['encode_s']:.1f} |")
    (out / "effort.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
