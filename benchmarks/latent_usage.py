"""How many latent channels a state uses: the share of y's estimated bits that each channel
carries on the held-out photos, at some qualities. Never run on Kodak.

    python benchmarks/latent_usage.py vaecodec/weights/msh96r.npz [--qualities 0,4,8]
        [--widths 96,160,96] [--json out.json]

A model whose channels all carry bits at a quality has no latent width to spare there (a
wider M could help); channels that carry next to nothing are unused. Session 16 measured
its widened model's new channels this way (0.00-0.01% of the bits), session 44 the default's
(every one of msh96r's 160 channels carries bits from quality 2 up). Rates are estimated from
the likelihoods with hard rounding, as `compare_states.py` does; z's bits are left out.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compare_states import load_state  # noqa: E402
from vaecodec.networks import ModelConfig  # noqa: E402
from vaecodec.train import TrainConfig, list_images, load_validation_images, split_holdout  # noqa: E402


def channel_bits(model, images: list[torch.Tensor], quality: float) -> tuple[np.ndarray, int]:
    """Estimated bits of y per latent channel, summed over `images`, and their pixel count."""
    quality = torch.tensor([float(quality)])
    bits, pixels = 0.0, 0
    for x in images:
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
        with torch.no_grad():
            bits = bits + model(padded, quality)["y_bits"].sum((0, 2, 3)).numpy()
        pixels += h * w
    return bits, pixels


def summary(bits: np.ndarray, pixels: int) -> dict:
    """How concentrated the bits are: the fewest channels that carry 50, 90 and 99% of them,
    and the channels that carry under 0.1% each."""
    share = bits / bits.sum()
    cumulative = np.cumsum(np.sort(share)[::-1])
    return {"y_bpp": float(bits.sum() / pixels),
            **{f"channels_for_{p}": int(np.searchsorted(cumulative, p / 100) + 1)
               for p in (50, 90, 99)},
            "channels_under_0.1%": int((share < 0.001).sum()),
            "largest_share": float(share.max()), "shares": share.round(6).tolist()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", type=Path)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--qualities", default="0,2,4,6,8")
    parser.add_argument("--widths", default="96,160,96")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    _, held_out = split_holdout(list_images(args.data), TrainConfig.holdout)
    images = load_validation_images(held_out)
    model, step, _ = load_state(args.state, ModelConfig(*map(int, args.widths.split(","))), False)
    model.eval()
    print(f"{args.state} (step {step}), {len(images)} held-out photos")
    results = {}
    for quality in map(float, args.qualities.split(",")):
        result = summary(*channel_bits(model, images, quality))
        results[f"{quality:g}"] = result
        print(f"q{quality:g}: y {result['y_bpp']:.3f} bpp; channels carrying 50/90/99% of the "
              f"bits: {result['channels_for_50']}/{result['channels_for_90']}/"
              f"{result['channels_for_99']} of {len(result['shares'])}; under 0.1% each: "
              f"{result['channels_under_0.1%']}; largest share {100 * result['largest_share']:.1f}%",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"state": str(args.state), "step": step,
                                         "photos": len(images), "qualities": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
