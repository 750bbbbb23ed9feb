"""How many of y's bits a channel-conditional context (Minnen & Singh 2020) would save on a
shipped model's frozen transforms: an upper-bound-style measurement before building one.

y is split into slices of channels, coded one after another; each slice's means and
log-scales are the hyperprior's plus corrections from a small network that reads the
hyperprior's parameters and the slices already decoded (3 x 3 convolutions, so their
neighbourhood too). The transforms and the hyperprior stay frozen: the networks learn only the
corrections, on the rate of y (additive noise in training, hard rounding in evaluation), from
random crops of the training photos. Judged on the held-out photos (never Kodak), at
qualities 0-8: y's bits with hard rounding, before and after, and the PSNR of the decoded
image (the means move the rounding grid, so distortion can change a little).

    python benchmarks/channel_context.py vaecodec/weights/msh96s.npz --slices 5 --minutes 30
"""

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaecodec.networks import ModelConfig, gaussian_likelihood  # noqa: E402
from vaecodec.train import (  # noqa: E402
    CropSampler, TrainConfig, TrainingModel, list_images, load_compact_state,
    load_validation_images, modulation_level, scales_from_log, split_holdout,
)


@torch.no_grad()
def frozen_features(model: TrainingModel, x: torch.Tensor, quality: float) -> dict:
    """y (after the quality's gain), the hyperprior's means and log-scales, and z's bits, as
    the codec computes them (z rounded around the medians)."""
    vae = model.vae
    q = torch.full((x.shape[0],), float(quality))
    gain, _ = vae.gains(q)
    y = vae.transform("g_a", x, q) * gain
    z = vae.transform("h_a", y, q)
    z_hat, z_likelihood = model.z_rate(z)
    means, log_scales = vae.h_s(z_hat).chunk(2, dim=1)
    return {"y": y, "means": means, "log_scales": log_scales,
            "z_bits": -torch.log2(z_likelihood).sum((1, 2, 3))}


class ChannelContext(nn.Module):
    """Per slice, corrections (means, log-scales) from [hyper means, hyper log-scales, decoded
    earlier slices]. Last layers start at zero: untrained, it codes as the hyperprior."""

    def __init__(self, channels: int, slices: int, width: int):
        super().__init__()
        self.bounds = np.linspace(0, channels, slices + 1).round().astype(int)
        self.nets = nn.ModuleList()
        for k in range(slices):
            inputs = 2 * channels + int(self.bounds[k])
            size = int(self.bounds[k + 1] - self.bounds[k])
            net = nn.Sequential(nn.Conv2d(inputs, width, 3, padding=1), nn.ReLU(),
                                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                nn.Conv2d(width, 2 * size, 3, padding=1))
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
            self.nets.append(net)

    def forward(self, y, means, log_scales, noisy: bool):
        """Bits of y (per element) and the decoded y_hat."""
        decoded, bits = [], []
        for k, net in enumerate(self.nets):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            # the hyperprior's log-scales are large numbers of nats; a tenth keeps them near one
            inputs = torch.cat([means / 10, log_scales, *decoded], dim=1)
            mean_c, scale_c = net(inputs).chunk(2, dim=1)
            mu = means[:, lo:hi] + mean_c
            log_s = log_scales[:, lo:hi] + scale_c
            y_k = y[:, lo:hi]
            residual = y_k - mu
            y_hat = mu + residual + (torch.round(residual) - residual).detach()
            values = y_k + torch.empty_like(y_k).uniform_(-0.5, 0.5) if noisy else y_hat
            bits.append(-torch.log2(gaussian_likelihood(values, mu, scales_from_log(log_s))))
            decoded.append(y_hat / 10)
        return torch.cat(bits, 1), torch.cat(decoded, 1) * 10


@torch.no_grad()
def evaluate(model, context, images, qualities) -> dict:
    """Per quality: mean bpp (y plain, y with context, z) and PSNR (plain, with context)."""
    vae = model.vae
    out = {}
    for quality in qualities:
        rows = []
        for x in images:
            h, w = x.shape[-2:]
            x_pad = nn.functional.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
            f = frozen_features(model, x_pad, quality)
            plain_hat = torch.round(f["y"] - f["means"]) + f["means"]
            plain_bits = -torch.log2(gaussian_likelihood(
                plain_hat, f["means"], scales_from_log(f["log_scales"]))).sum()
            ctx_bits, ctx_hat = context(f["y"], f["means"], f["log_scales"], noisy=False)
            q = torch.tensor([float(quality)])
            _, inverse_gain = vae.gains(q)
            psnrs = []
            for y_hat in (plain_hat, ctx_hat):
                x_hat = vae.transform("g_s", y_hat * inverse_gain, q)[..., :h, :w].clamp(0, 1)
                psnrs.append(-10 * math.log10((x_hat - x).pow(2).mean().item()))
            pixels = h * w
            rows.append((plain_bits.item() / pixels, ctx_bits.sum().item() / pixels,
                         f["z_bits"].item() / pixels, *psnrs))
        a = np.array(rows).mean(0)
        out[quality] = {"y_bpp": a[0], "y_bpp_context": a[1], "z_bpp": a[2], "psnr": a[3],
                        "psnr_context": a[4],
                        "total_saving": 1 - (a[1] + a[2]) / (a[0] + a[2])}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--photos", type=int, default=300, help="training photos to crop from")
    parser.add_argument("--seed", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    model = TrainingModel(replace(ModelConfig(), modulated=modulation_level(args.weights)))
    load_compact_state(model, args.weights)
    model.eval().requires_grad_(False)
    training, held_out = split_holdout(list_images(args.data), TrainConfig.holdout)
    generator = torch.Generator().manual_seed(args.seed)
    sampler = CropSampler(training[::max(1, len(training) // args.photos)], args.patch, generator)
    images = load_validation_images(held_out)

    context = ChannelContext(model.vae.cfg.M, args.slices, args.width)
    optimizer = torch.optim.Adam(context.parameters(), lr=args.lr)
    start, step, log = time.time(), 0, []
    budget = args.minutes * 60
    while time.time() - start < budget:
        progress = (time.time() - start) / budget
        for group in optimizer.param_groups:     # flat, then linear decay over the last half
            group["lr"] = args.lr * min(1.0, 2 * (1 - progress) + 0.05)
        x = sampler.sample(args.batch)
        quality = float(torch.rand(()) * 8)
        f = frozen_features(model, x, quality)
        bits, _ = context(f["y"], f["means"], f["log_scales"], noisy=True)
        plain = -torch.log2(gaussian_likelihood(
            f["y"] + torch.empty_like(f["y"]).uniform_(-0.5, 0.5), f["means"],
            scales_from_log(f["log_scales"]))).sum()
        loss = bits.sum() / plain
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(context.parameters(), 1.0)
        optimizer.step()
        step += 1
        log.append(loss.item())
        if step % 100 == 0:
            print(f"step {step} {time.time() - start:.0f}s y bits / plain "
                  f"{np.mean(log[-100:]):.4f}", flush=True)
    result = evaluate(model, context, images, range(9))
    for quality, row in result.items():
        print(f"q{quality}: y {row['y_bpp']:.4f} -> {row['y_bpp_context']:.4f} bpp "
              f"(z {row['z_bpp']:.4f}), total -{100 * row['total_saving']:.2f}%, "
              f"PSNR {row['psnr']:.3f} -> {row['psnr_context']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "steps": step, "results": result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
