"""Compare training states on photos, never on Kodak: mean estimated bpp and PSNR at qualities
0-8, and each state's BD-rate on PSNR against the first one (overall, low and high half).

    python benchmarks/compare_states.py vaecodec/weights/msh96d.npz runs/a/checkpoint.pt \
        runs/b/checkpoint.pt [--every 25] [--widths 96,160,96] [--json out.json]

The photos are the training's 12 held-out ones plus every `--every`-th training photo, shrunk
to at most 512 pixels: twelve photos at four qualities (the training's own validation) cannot
resolve the ~1% that a CPU session's training moves. A training photo counts no more for a
state that trained on it than for another that did too, so it serves to compare runs on the
same data. States are shipped weights files that carry their training state (exported since
session 10), compact training states (.npz, such as the older checkpoints/msh96-train.npz) or
training checkpoints (.pt, exported as they would ship); rates are estimated from the
likelihoods with hard rounding (the codec's files come within ~1% of them).

Each BD-rate is also given on the held-out photos and on the training ones apart: a state that
gains more on the photos it trained on than on the held-out ones is fitting the training set
rather than learning to code photos (session 44: msh96h to msh96r, −5.1% held out, −4.7% on
training photos, so the model is far from that).
"""

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaecodec.metrics import bd_rate  # noqa: E402
from vaecodec.networks import ModelConfig  # noqa: E402
from vaecodec.train import (  # noqa: E402
    TrainConfig, TrainingModel, modulation_level, list_images, load_compact_state,
    load_validation_images, split_holdout, validate,
)
from vaecodec.weights import export  # noqa: E402

QUALITIES = tuple(range(9))


def load_state(path: Path, widths: ModelConfig, context: bool) -> tuple[TrainingModel, int, float]:
    """A TrainingModel holding a weights file's or a compact state's networks, or a
    checkpoint's exported as they would ship, so that states are compared on equal terms;
    with the step and training seconds the state had reached. Whether the model is modulated
    is read off the state."""
    with tempfile.TemporaryDirectory() as folder:
        if path.suffix != ".npz":
            path = export(path, Path(folder) / "weights.npz")
        model = TrainingModel(replace(widths, modulated=modulation_level(path)), context)
        step, seconds = load_compact_state(model, path)
    return model, step, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("states", nargs="+", type=Path)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--every", type=int, default=25, help="every n-th training photo too")
    parser.add_argument("--widths", default="96,160,96")
    parser.add_argument("--context", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    training, held_out = split_holdout(list_images(args.data), TrainConfig.holdout)
    subsets = {"held_out": load_validation_images(held_out),
               "training": load_validation_images(training[::args.every])}
    photos = sum(len(images) for images in subsets.values())
    widths = ModelConfig(*(int(v) for v in args.widths.split(",")))
    print(f"{photos} photos ({len(held_out)} held out), "
          f"qualities {QUALITIES[0]}-{QUALITIES[-1]}")
    curves = {}
    for path in args.states:
        model, step, seconds = load_state(path, widths, args.context)
        parts = {}
        for name, images in subsets.items():
            with torch.no_grad():
                result = validate(model, images, QUALITIES)
            parts[name] = {key: [result[f"q{q}_{key}"] for q in QUALITIES]
                           for key in ("bpp", "psnr")}
        # validate averages over photos: the mean over all is the subsets' means by count
        mean = {key: [sum(len(subsets[name]) * parts[name][key][i] for name in subsets) / photos
                      for i in range(len(QUALITIES))] for key in ("bpp", "psnr")}
        # a checkpoint's path names no step, and the same path holds other states later on
        curves[str(path)] = {"step": step, "train_seconds": round(seconds), **mean,
                             "subsets": parts}
        print(path, f"(step {step})", " ".join(f"q{q} {b:.4f}/{p:.3f}" for q, b, p in
                             zip(QUALITIES, curves[str(path)]["bpp"], curves[str(path)]["psnr"])),
              flush=True)
    base = curves[str(args.states[0])]
    middle = len(QUALITIES) // 2
    for path in args.states[1:]:
        curve = curves[str(path)]

        def bd(part):
            return bd_rate(base["bpp"][part], base["psnr"][part], curve["bpp"][part],
                           curve["psnr"][part])

        curve["bd_rate"] = {"all": bd(slice(None)), "low": bd(slice(None, middle + 1)),
                            "high": bd(slice(middle, None))}
        curve["bd_rate_subsets"] = {
            name: bd_rate(base["subsets"][name]["bpp"], base["subsets"][name]["psnr"],
                          curve["subsets"][name]["bpp"], curve["subsets"][name]["psnr"])
            for name in subsets}
        print(f"{path}: BD-rate against {args.states[0]}: {curve['bd_rate']['all']:+.2f}% "
              f"(q0-{middle} {curve['bd_rate']['low']:+.2f}%, "
              f"q{middle}-{QUALITIES[-1]} {curve['bd_rate']['high']:+.2f}%; "
              f"held out {curve['bd_rate_subsets']['held_out']:+.2f}%, "
              f"training photos {curve['bd_rate_subsets']['training']:+.2f}%)")
    if args.json:
        args.json.write_text(json.dumps({"photos": photos, "qualities": QUALITIES,
                                         "curves": curves}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
