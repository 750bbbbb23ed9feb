"""Rate control on Kodak: how close files land to the size or PSNR asked for, and its cost.

    python benchmarks/rate_control.py [--bpp 0.6,1.0,1.5] [--psnr 26,28] \
        [--out benchmarks/results/rate-control]

For every Kodak image and target, `vaecodec.compress(target_size=...)` (a byte budget equal to
the bpp times the pixels) or `compress(target_psnr=...)` makes the file; the script records its
size against the budget, its decoded PSNR against the target, and how many encodings the
search made (counted at `codec.quantize`). Writes `rate-control.json` and `rate-control.md`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vaecodec  # noqa: E402
from vaecodec import codec  # noqa: E402
from vaecodec.metrics import psnr  # noqa: E402
from vaecodec.weights import load_model  # noqa: E402


def counting_encodes():
    """Wrap codec.quantize so that every encoding the search makes is counted."""
    original = codec.quantize
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    codec.quantize = counted
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bpp", default="0.6,1.0,1.5")
    parser.add_argument("--psnr", default="26,28")
    parser.add_argument("--folder", default=str(ROOT / "data" / "kodak"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rate-control"))
    args = parser.parse_args()
    paths = sorted(Path(args.folder).glob("*.png"))
    calls = counting_encodes()
    targets = [("bpp", float(b)) for b in args.bpp.split(",") if b] + [
        ("psnr", float(p)) for p in args.psnr.split(",") if p]
    rows = []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        pixels = image.shape[0] * image.shape[1]
        for kind, value in targets:
            calls[0] = 0
            start = time.perf_counter()
            try:
                if kind == "bpp":
                    budget = int(value * pixels / 8)
                    data = vaecodec.compress(image, target_size=budget)
                else:
                    data = vaecodec.compress(image, target_psnr=value)
                error = ""
            except vaecodec.InputError as failure:      # an impossible target for this image
                data, error = b"", str(failure)
            seconds = time.perf_counter() - start
            row = {"image": path.stem, "target": kind, "value": value, "encodes": calls[0],
                   "seconds": seconds, "error": error}
            if data:
                decoded = np.asarray(vaecodec.decompress(data))
                row.update(bytes=len(data), quality=vaecodec.info(data)["quality"],
                           psnr=psnr(image, decoded))
                if kind == "bpp":
                    row["budget"] = budget
            rows.append(row)
            print(json.dumps(row), flush=True)

    lines = ["| target | files | within 3% below | over budget / below target | "
             "size / budget (mean, min) | PSNR − target (mean, min) | encodes (mean, max) | "
             "seconds (mean) |", "|---|---:|---:|---:|---|---|---|---:|"]
    for kind, value in targets:
        group = [r for r in rows if r["target"] == kind and r["value"] == value]
        made = [r for r in group if "bytes" in r]
        encodes = [r["encodes"] for r in group]
        seconds = np.mean([r["seconds"] for r in group])
        if kind == "bpp":
            ratios = [r["bytes"] / r["budget"] for r in made] or [float("nan")]
            within = sum(0.97 <= x <= 1 for x in ratios)
            over = sum(x > 1 for x in ratios)
            lines.append(f"| {value:g} bpp | {len(made)}/{len(group)} | {within} | {over} | "
                         f"{np.mean(ratios):.4f}, {min(ratios):.4f} | | "
                         f"{np.mean(encodes):.1f}, {max(encodes)} | {seconds:.1f} |")
        else:
            margins = [r["psnr"] - value for r in made] or [float("nan")]
            below = sum(m < 0 for m in margins)
            lines.append(f"| {value:g} dB | {len(made)}/{len(group)} | | {below} | | "
                         f"{np.mean(margins):+.3f}, {min(margins):+.3f} | "
                         f"{np.mean(encodes):.1f}, {max(encodes)} | {seconds:.1f} |")
    bundle = load_model()
    text = (f"Rate control on the {len(paths)} Kodak images, model {bundle.model_id} "
            f"({bundle.meta.get('step')} training steps, weights {bundle.weights_hash.hex()}).\n"
            "Command: `python benchmarks/rate_control.py " + " ".join(sys.argv[1:]) + "`\n\n"
            + "\n".join(lines) + "\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rate-control.md").write_text(text)
    (out / "rate-control.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
