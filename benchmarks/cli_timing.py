"""Whole-process times a user feels: `vaecodec compress`, `decompress` and `info` on one Kodak
image, next to CompressAI's mean-scale hyperprior doing the same round trip in its own processes
(same widths as the shipped model; untrained weights, which do not change its speed).

    python benchmarks/cli_timing.py [--runs 5] [--image data/kodak/kodim01.png]

Prints the median wall-clock seconds of each command over the runs, and the ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMPRESSAI_ENCODE = r"""
import sys, numpy as np, torch
from PIL import Image
from compressai.models import MeanScaleHyperprior
torch.manual_seed(0)
net = MeanScaleHyperprior(N={N}, M={M}).eval()
net.update(force=True)
x = torch.from_numpy(np.asarray(Image.open(sys.argv[1]).convert("RGB")).copy())
x = x.permute(2, 0, 1)[None].float() / 255
with torch.no_grad():
    out = net.compress(x)
y, z = out["strings"][0][0], out["strings"][1][0]
shape = out["shape"]
open(sys.argv[2], "wb").write(len(y).to_bytes(4, "little") + bytes(shape) + y + z)
"""

COMPRESSAI_DECODE = r"""
import sys, numpy as np, torch
from PIL import Image
from compressai.models import MeanScaleHyperprior
torch.manual_seed(0)
net = MeanScaleHyperprior(N={N}, M={M}).eval()
net.update(force=True)
data = open(sys.argv[1], "rb").read()
n = int.from_bytes(data[:4], "little"); shape = list(data[4:6])
y, z = data[6:6 + n], data[6 + n:]
with torch.no_grad():
    x = net.decompress([[y], [z]], shape)["x_hat"]
Image.fromarray((x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(sys.argv[2])
"""


def timed(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs + 1):               # the first run warms the page cache
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image", default=str(ROOT / "data" / "kodak" / "kodim01.png"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from vaecodec.weights import load_model

    config = load_model().meta["config"]
    vaecodec = [sys.executable, "-m", "vaecodec.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {
            "vaecodec compress": timed(
                vaecodec + ["compress", args.image, "-o", str(tmp / "a.vae"), "-f"], args.runs),
            "vaecodec decompress": timed(
                vaecodec + ["decompress", str(tmp / "a.vae"), "-o", str(tmp / "a.png"), "-f"],
                args.runs),
            "vaecodec info": timed(vaecodec + ["info", str(tmp / "a.vae")], args.runs),
        }
        try:
            import compressai  # noqa: F401
        except ImportError:
            print("CompressAI is not installed: its column is left out")
        else:
            encode = COMPRESSAI_ENCODE.replace("{N}", str(config["N"])).replace("{M}", str(config["M"]))
            decode = COMPRESSAI_DECODE.replace("{N}", str(config["N"])).replace("{M}", str(config["M"]))
            results["compressai compress"] = timed(
                [sys.executable, "-c", encode, args.image, str(tmp / "c.bin")], args.runs)
            results["compressai decompress"] = timed(
                [sys.executable, "-c", decode, str(tmp / "c.bin"), str(tmp / "c.png")], args.runs)
    print(f"whole-process wall-clock, median of {args.runs} runs, {os.cpu_count()} CPUs, "
          f"image {Path(args.image).name}")
    for name, seconds in results.items():
        print(f"  {name:24} {seconds:6.2f} s")
    if "compressai decompress" in results:
        for step in ("compress", "decompress"):
            ratio = results[f"compressai {step}"] / results[f"vaecodec {step}"]
            print(f"  {step}: vaecodec is {ratio:.2f}x as fast as CompressAI")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
