"""Training throughput: steps and megapixels per second of the real training step (the model,
the loss, Adam, clipping and the bottleneck's auxiliary step), for float32 and bfloat16 and
for several batch sizes, measured in one run. A lent GPU session runs it first and trains with
whichever is faster (`bin/gpu-session`); on the CPU it says what a configuration costs before
a run commits to it.

    python benchmarks/train_speed.py [--device cuda] [--batches 32,64] [--patch 256]
        [--precisions float32,bfloat16] [--widths 96,160,96] [--modulation 3] [--context]
        [--seconds 8] [--json out.json]

Crops come from the training photos when `--data` holds some (their content does not change
the speed), random pixels otherwise. Prints one row per configuration, then the fastest in
megapixels per second among those whose loss stayed finite.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaecodec.networks import MAX_QUALITY, MIN_QUALITY, ModelConfig  # noqa: E402
from vaecodec.train import CropSampler, build_training, list_images, training_step  # noqa: E402


def measure(precision: str, batch: int, args, widths: ModelConfig, crops) -> dict:
    """Train a fresh model for `args.seconds` after `args.warmup` untimed steps."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, optimizer, aux_optimizer = build_training(
        widths, args.context, precision == "bfloat16", device, 1e-4, 1e-3)
    generator = torch.Generator().manual_seed(0)

    def step():
        x = crops(batch).to(device)
        quality = MIN_QUALITY + torch.rand(batch, generator=generator) * (MAX_QUALITY - MIN_QUALITY)
        return training_step(model, model, optimizer, aux_optimizer, x, quality, 1.0)[0]

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):     # cuDNN picks its algorithms here
        step()
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    steps, start = 0, time.perf_counter()
    while True:
        loss = step()
        steps += 1
        if steps % 5 == 0:
            synchronize()
            if time.perf_counter() - start >= args.seconds:
                break
    elapsed = time.perf_counter() - start
    loss = float(loss.detach())
    return {
        "precision": precision, "batch": batch, "patch": args.patch, "steps": steps,
        "seconds": round(elapsed, 2), "steps_per_s": steps / elapsed,
        "mpixels_per_s": steps * batch * args.patch**2 / elapsed / 1e6,
        "final_loss": loss, "finite": math.isfinite(loss),
        "peak_gib": (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="4")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--widths", default="96,160,96")
    parser.add_argument("--modulation", type=int, default=0,
                        help="per-quality modulation level, as the shipped models have")
    parser.add_argument("--context", action="store_true")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = ModelConfig(*(int(v) for v in args.widths.split(",")), args.modulation)
    photos = list_images(args.data)[:64] if Path(args.data).is_dir() else []
    if photos:
        sampler = CropSampler(photos, args.patch, torch.Generator().manual_seed(0), args.device)
        crops = sampler.sample
    else:
        crops = lambda batch: torch.rand(batch, 3, args.patch, args.patch)  # noqa: E731

    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {name}; widths {args.widths}, modulation level {args.modulation}"
          f"{' + context' if args.context else ''}; "
          f"crops of {args.patch}² from {'photos' if photos else 'random pixels'}")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for precision in args.precisions.split(","):
            try:
                row = measure(precision, batch, args, widths, crops)
            except RuntimeError as error:   # out of memory, among others
                row = {"precision": precision, "batch": batch, "error": str(error).split("\n")[0]}
                print(f"{precision:>9} batch {batch:>3}: failed: {row['error']}", flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
            else:
                memory = f", peak {row['peak_gib']:.1f} GiB" if row["peak_gib"] is not None else ""
                print(f"{precision:>9} batch {batch:>3}: {row['steps_per_s']:6.2f} steps/s, "
                      f"{row['mpixels_per_s']:7.2f} Mpixels/s, final loss {row['final_loss']:.3f}"
                      f"{memory}", flush=True)
            rows.append(row)
    usable = [r for r in rows if r.get("finite")]
    best = max(usable, key=lambda r: r["mpixels_per_s"]) if usable else None
    if best:
        base = usable[0]["mpixels_per_s"]
        print(f"fastest: {best['precision']} batch {best['batch']} "
              f"({best['mpixels_per_s'] / base:.2f} times the first configuration)")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "widths": args.widths,
                                         "context": args.context, "rows": rows,
                                         "fastest": best}, indent=1))
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
