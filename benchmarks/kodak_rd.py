"""Rate-distortion of the shipped model on Kodak through the real file path.

    python benchmarks/kodak_rd.py [--qualities 0,0.5,1,...,8] [--images N] [--json out.json]

For each quality, every image is compressed to bytes and decoded; bpp comes from the byte
count, PSNR and MS-SSIM from the decoded image. Prints the per-quality means (the mean of
per-image metrics) and the median encode and decode seconds per image.
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
from vaecodec.benchmark import VAECODEC_QUALITIES  # noqa: E402
from vaecodec.metrics import ms_ssim, psnr  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qualities", default=",".join(f"{q:g}" for q in VAECODEC_QUALITIES))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--folder", default=str(ROOT / "data" / "kodak"))
    parser.add_argument("--json")
    args = parser.parse_args()
    paths = sorted(Path(args.folder).glob("*.png"))[:args.images]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    vaecodec.decompress(vaecodec.compress(images[0][:64, :64]))   # warm-up: load the model
    rows = []
    print(f"{'quality':>7} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8} {'enc s':>6} {'dec s':>6}")
    for quality in [float(q) for q in args.qualities.split(",")]:
        bpp, p, m, enc, dec = [], [], [], [], []
        for image in images:
            t0 = time.perf_counter()
            data = vaecodec.compress(image, quality=quality)
            t1 = time.perf_counter()
            decoded = np.asarray(vaecodec.decompress(data))
            t2 = time.perf_counter()
            bpp.append(8 * len(data) / (image.shape[0] * image.shape[1]))
            p.append(psnr(image, decoded))
            m.append(ms_ssim(image, decoded))
            enc.append(t1 - t0)
            dec.append(t2 - t1)
        row = {"quality": quality, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(p)),
               "ms_ssim": float(np.mean(m)), "encode_s": statistics.median(enc),
               "decode_s": statistics.median(dec)}
        rows.append(row)
        print(f"{quality:7.2f} {row['bpp']:7.4f} {row['psnr']:7.2f} {row['ms_ssim']:8.4f} "
              f"{row['encode_s']:6.2f} {row['decode_s']:6.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"images": len(images), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
