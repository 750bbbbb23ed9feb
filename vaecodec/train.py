"""Training: rate + lambda * distortion over random crops of a folder of photographs.

One model covers every quality: each crop in a batch draws its own continuous quality, by default
over the codec's whole scale [0, 8], which selects both its lambda and its (interpolated) latent
gain; below 1 both follow the line through levels 1 and 2, as the codec extends them. The rate
of y is the Gaussian likelihood under the hyper-synthesis' means and scales with additive
uniform noise; the synthesis sees the rounded latents through a straight-through estimator,
which matches what the decoder receives. The rate of z comes from CompressAI's EntropyBottleneck.

The weights that ship are an exponential moving average of the trained ones (`WeightAverage`):
it removes most of the step-to-step noise of Adam at a high learning rate, which otherwise only
a decay of the learning rate would.

Checkpoints hold everything needed to resume exactly (model, its average, entropy bottleneck,
optimizer, step, wall-clock, the data generator's state) and load with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .architecture import LOWEST_QUALITY, MODULATIONS, quality_lambda
from .networks import (
    GDN, LOG_SCALE_STEP, MAX_QUALITY, SCALE_MAX, SCALE_MIN, CheckerboardContext, HyperpriorVAE,
    ModelConfig, gaussian_likelihood, lambda_for_quality, split_entropy_parameters,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint."""

    data: str = "../shared/data/train"
    out: str = "runs/main"
    steps: int = 40_000           # the schedule's length; a resumed run may extend it
    batch: int = 8
    patch: int = 128
    lr: float = 4e-4
    warmup: int = 300
    decay_from: float = 0.8       # fraction of `steps` after which the lr decays linearly to 1/20
    aux_lr: float = 1e-3
    clip: float = 1.0
    average: float = 0.999        # decay of the weight average that ships; 0: ship the live weights
    holdout: int = 12             # images kept out of training for validation
    checkpoint_minutes: float = 5.0
    validate_every: int = 1000
    seed: int = 0
    device: str = "cpu"
    threads: int = 0              # 0: let torch decide
    N: int = 96
    M: int = 160
    H: int = 96
    context: bool = False         # add a checkerboard context model (see networks.py)
    modulation: int = 0           # level of per-quality modulation (architecture.MODULATIONS)
    # The modulation's few scales learn at their own, higher rate (session 17: 1e-3 beside the
    # transforms' 5e-5); the schedule scales both alike.
    modulation_lr: float = 1e-3
    # A context model added to a trained model starts from nothing beside weights that have
    # converged, so it too learns at its own rate (the schedule scales it alike).
    context_lr: float = 5e-4
    bf16: bool = False            # g_a and g_s in bfloat16, channels-last (GPU tensor cores)
    compile: str = "off"          # torch.compile the model: "on", "off", or "auto" (CompileTrial)
    save_replicas: bool = False   # under torchrun, ranks > 0 also save their final weights
    init: str = ""                # a training state to start from (see load_compact_state)
    # When `init` is narrower in M, the scale of the new latent channels' analysis rows against
    # PyTorch's default initialisation; 0 starts them at zero, coding exactly as `init` did
    # (see widen_state).
    new_latents: float = 0.0
    # ... and the steps over which their bits come into the loss: none in the first half, then
    # linearly more up to all, so that the synthesis learns to use them before their rate
    # pushes them back to zero. None at first, not just few: the rate is the only gradient
    # their analysis rows get until the synthesis reads them, and Adam steps as far on a small
    # gradient as on a large one. (Session 44: they learnt, then went back to zero all the
    # same once their bits counted; see TRAINING.md.)
    new_latents_ramp: int = 0
    kodak: str = ""               # a folder of evaluation images, reported only (never trained on)
    kodak_every: int = 5000
    # Crops draw qualities from here to MAX_QUALITY: by default the codec's whole scale, so that
    # the qualities below the lowest gain level are trained too (runs before session 8 drew
    # from 1).
    lowest_quality: float = LOWEST_QUALITY
    balance: float = 0.0          # exponent of quality_balance; 0: the plain mean (to session 8)


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside a folder, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def split_holdout(paths: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    """A fixed, name-based split so every run and every resume holds out the same images."""
    ranked = sorted(paths, key=lambda p: hash_name(p.name))
    return ranked[count:], ranked[:count]


def hash_name(name: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


class CropSampler:
    """Random crops, randomly downscaled (washes out JPEG artifacts) and flipped, as a batch.

    The photos are held decoded on `device`, so that on a GPU the crops are cut and resized
    there rather than by one CPU thread. A batch costs one copy per crop and two batched matrix
    products: a crop's bicubic, antialiased resize is one matrix per axis (the weights
    `interpolate` uses, read off an identity matrix), and its flip reverses the columns' one. On
    a GPU that is a few dozen kernel launches per batch instead of several per crop, which
    counts when a training step takes milliseconds."""

    def __init__(self, paths: list[Path], patch: int, generator: torch.Generator,
                 device: str = "cpu"):
        self.patch = patch
        self.generator = generator
        self.device = device
        self.images = [
            torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).to(device)
            for p in paths
        ]
        self._windows = torch.zeros(0, 3, 2 * patch, 2 * patch, device=device)
        self._resize = {}

    def _uniform(self) -> float:
        return torch.rand((), generator=self.generator).item()

    def _resize_matrix(self, size: int, flip: bool) -> torch.Tensor:
        """(patch, 2 patch): resizes `size` pixels to `patch` as bicubic, antialiased
        `interpolate` does (in reverse order if `flip`), with zeros beyond `size`."""
        if (size, flip) not in self._resize:
            identity = torch.eye(size, device=self.device)[None, None]
            weights = nn.functional.interpolate(identity, size=(self.patch, size), mode="bicubic",
                                                antialias=True, align_corners=False)[0, 0]
            matrix = torch.zeros(self.patch, 2 * self.patch, device=self.device)
            matrix[:, :size] = weights.flip(0) if flip else weights
            self._resize[size, flip] = matrix
        return self._resize[size, flip]

    def sample(self, batch: int) -> torch.Tensor:
        """`batch` crops, (batch, 3, patch, patch) in 0..1."""
        if len(self._windows) < batch:
            self._windows = torch.zeros(batch, *self._windows.shape[1:], device=self.device)
        # Each crop's window goes in the top-left corner; what the last batch left beyond it
        # meets zero weights only.
        windows = self._windows[:batch]
        rows, columns = [], []
        for i in range(batch):
            image = self.images[int(self._uniform() * len(self.images))]
            h, w = image.shape[-2:]
            largest = min(w, h) / self.patch
            scale = 1.0 + self._uniform() * (min(largest, 2.0) - 1.0)  # source pixels per output
            size = int(self.patch * scale)
            left = int(self._uniform() * (w - size + 1))
            top = int(self._uniform() * (h - size + 1))
            windows[i, :, :size, :size] = image[:, top:top + size, left:left + size]
            rows.append(self._resize_matrix(size, False))
            columns.append(self._resize_matrix(size, self._uniform() < 0.5))
        crops = (torch.stack(rows)[:, None] @ windows
                 @ torch.stack(columns)[:, None].transpose(-1, -2))
        return crops.clamp_(0.0, 255.0).div_(255.0)


def scales_from_log(log_scales: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_scales.clamp(math.log(SCALE_MIN), math.log(SCALE_MAX)))


class TrainingModel(nn.Module):
    """The VAE plus CompressAI's factorized prior for z, and optionally a checkerboard context
    model: the training-time objective."""

    def __init__(self, cfg: ModelConfig, context: bool = False, bf16: bool = False):
        super().__init__()
        from compressai.entropy_models import EntropyBottleneck

        self.vae = HyperpriorVAE(cfg)
        self.z_prior = EntropyBottleneck(cfg.H)
        self.context = CheckerboardContext(cfg) if context else None
        self.bf16 = bf16
        # The weight of each latent channel's bits in the training loss (see
        # TrainConfig.new_latents_ramp); evaluation counts every bit.
        self.register_buffer("y_rate_weight", torch.ones(cfg.M), persistent=False)

    def reduced_precision(self, x: torch.Tensor):
        """bfloat16 autocast for the inner layers of g_a and g_s when training with `bf16`.
        The layers that make y and read it back, the image's last layer, rounding, the entropy
        parameters and the likelihoods stay in float32: a y near 50 in bfloat16 would be off
        by a quarter of a quantization step. Validation, like the codec, is all float32."""
        return torch.autocast(x.device.type, torch.bfloat16, enabled=self.bf16 and self.training)

    def z_rate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z with noise (training) or rounded around the medians (evaluation), and its
        likelihoods: what `self.z_prior(z)` returns. CompressAI's forward moves the channels
        first with a permutation held in a device tensor, whose values Python must read back:
        on a GPU that waits for every queued kernel at each step (and torch.compile cannot trace
        it), so the same steps are taken here with a plain transpose."""
        prior = self.z_prior
        channels_first = z.transpose(0, 1)
        values = channels_first.reshape(channels_first.shape[0], 1, -1)
        noisy = prior.quantize(values, "noise" if self.training else "dequantize",
                               prior._get_medians())
        likelihood = prior._likelihood(noisy)[0]
        if prior.use_likelihood_bound:
            likelihood = prior.likelihood_lower_bound(likelihood)
        return (noisy.reshape(channels_first.shape).transpose(0, 1),
                likelihood.reshape(channels_first.shape).transpose(0, 1))

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> dict:
        vae = self.vae
        gain, inverse_gain = vae.gains(quality)
        last_a, last_s = len(vae.g_a) - 1, len(vae.g_s) - 1
        with self.reduced_precision(x):
            features = vae.transform("g_a", x, quality, range(last_a))
        y = vae.transform("g_a", features.float(), quality, range(last_a, last_a + 1)) * gain
        z = vae.transform("h_a", y, quality)
        z_tilde, z_likelihood = self.z_rate(z)
        means, log_scales = split_entropy_parameters(vae.h_s(z_tilde))

        def rounded(means: torch.Tensor) -> torch.Tensor:
            """What the decoder receives: the residual rounded, with a straight-through
            gradient when training."""
            if not self.training:
                return torch.round(y - means) + means
            return means + (y - means + (torch.round(y - means) - (y - means)).detach())

        if self.context is not None:
            # The context model sees the anchors as decoded, in the codec's scale-index units.
            scale_index = (log_scales - math.log(SCALE_MIN)) / LOG_SCALE_STEP
            means, scale_index = self.context(rounded(means), means, scale_index)
            log_scales = math.log(SCALE_MIN) + LOG_SCALE_STEP * scale_index
        scales = scales_from_log(log_scales)
        y_hat = rounded(means)
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5) if self.training else y_hat
        y_likelihood = gaussian_likelihood(y_tilde, means, scales)
        features = vae.transform("g_s", y_hat * inverse_gain, quality, range(1))
        with self.reduced_precision(x):
            features = vae.transform("g_s", features, quality, range(1, last_s))
        x_hat = vae.transform("g_s", features.float(), quality, range(last_s, last_s + 1))
        pixels = x.shape[2] * x.shape[3]
        y_bits = -torch.log2(y_likelihood)
        if self.training:
            y_bits = y_bits * self.y_rate_weight[:, None, None]
        bits = y_bits.sum((1, 2, 3)) - torch.log2(z_likelihood).sum((1, 2, 3))
        mse = (x_hat - x).pow(2).mean((1, 2, 3))
        # y_bits: each latent element's estimated bits (weighted by y_rate_weight in training)
        return {"bpp": bits / pixels, "mse": mse, "x_hat": x_hat, "y_bits": y_bits}


class WeightAverage:
    """An exponential moving average of a model's floating-point weights and buffers.

    In the first steps of a run the new weights weigh in more (decay (1 + step) / (10 + step)
    until that exceeds `decay`), so the average does not lag far behind a model that starts from
    scratch; an average started on a trained model (a resumed or initialised run) gets the full
    decay at once."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in `model`'s weights after its optimizer step number `step` (from 0)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        floating = [(a, c) for a, c in pairs if a.is_floating_point()]
        # One call for all the tensors: a loop would launch a kernel per tensor on a GPU.
        torch._foreach_lerp_([a for a, _ in floating], [c for _, c in floating], 1.0 - decay)
        for average, current in pairs:
            if not average.is_floating_point():
                average.copy_(current)


class CompileTrial:
    """Which of the model and its torch.compile'd version (one that fuses the element-wise
    layers into fewer kernels) trains faster here, measured on the run's own steps: STEPS
    timed eager steps, then the compilation and as many timed compiled steps. The compiled
    model stays only if it is MARGIN times as fast; if compiling fails, training goes on
    eagerly. Every step of the trial trains, so only the compilation's time is spent on the
    question. `mode` "on" compiles at once without measuring; "off" never compiles. Under
    torchrun every rank takes rank 0's decision, so that all of them train the same graph."""

    SETTLE = 10     # steps before timing (cuDNN picks its algorithms; the compilation runs)
    STEPS = 100     # timed steps of each
    MARGIN = 1.05

    def __init__(self, model: nn.Module, mode: str, device: str, log):
        self.model, self.device, self.log = model, device, log
        self.trainer = torch.compile(model) if mode == "on" else model
        self.phase = "eager" if mode == "auto" else "done"
        self.count, self.started, self.eager_rate = 0, 0.0, 0.0

    def _clock(self) -> float:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    def step(self, take_step):
        """`take_step(trainer)` with the model in use, then the trial's timing, compiling and
        deciding. A step the compiled model failed is taken again eagerly, for good."""
        try:
            result = take_step(self.trainer)
        except Exception as error:   # noqa: BLE001 - only a compiled model's failure is retried
            if self.trainer is self.model:
                raise
            self.log(f"torch.compile failed, training on eagerly: {str(error).splitlines()[0]}")
            self.trainer, self.phase = self.model, "done"
            result = take_step(self.trainer)
        if self.phase != "done":
            self._count()
        return result

    def _count(self) -> None:
        self.count += 1
        if self.count == self.SETTLE:
            self.started = self._clock()
        elif self.count == self.SETTLE + self.STEPS:
            rate = self.STEPS / (self._clock() - self.started)
            self.count = 0
            if self.phase == "eager":
                self.eager_rate, self.phase = rate, "timing compiled"
                self.trainer = torch.compile(self.model)
                return
            keep = self._as_rank_zero_decides(rate >= self.MARGIN * self.eager_rate)
            self.log(f"compiled model: {rate:.2f} steps/s against {self.eager_rate:.2f} eagerly; "
                     f"training on {'compiled' if keep else 'eagerly'}")
            self.trainer, self.phase = (self.trainer if keep else self.model), "done"

    def _as_rank_zero_decides(self, keep: bool) -> bool:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return keep
        flag = torch.tensor([float(keep)], device=self.device)
        dist.broadcast(flag, 0)
        return bool(flag.item())


def shipped_state(checkpoint: dict) -> dict:
    """The model weights of a checkpoint that ship: the average when the run kept one."""
    return checkpoint.get("average") or checkpoint["model"]


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """The main optimizer's learning rate: a linear warm-up over the first `cfg.warmup` steps of
    a fresh run, the peak until `cfg.decay_from` of the schedule, then a linear decay to 1/20.
    `progress` is the fraction of the schedule done, counted in steps or in minutes."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if progress < cfg.decay_from:
        return cfg.lr
    decayed = min(1.0, (progress - cfg.decay_from) / max(1e-9, 1.0 - cfg.decay_from))
    return cfg.lr * (1.0 - 0.95 * decayed)


def psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def validate(model: TrainingModel, images: list[torch.Tensor], qualities=(0, 1, 4, 8)) -> dict:
    """Estimated bpp and PSNR with hard rounding, on whole images padded to a multiple of 64."""
    model.eval()
    device = next(model.parameters()).device
    results = {}
    for q in qualities:
        bpps, psnrs = [], []
        for x in images:
            x = x.to(device)
            h, w = x.shape[-2:]
            padded = nn.functional.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
            out = model(padded, torch.tensor([float(q)], device=device))
            x_hat = out["x_hat"][..., :h, :w].clamp(0, 1)
            bpps.append(out["bpp"].item() * padded.shape[2] * padded.shape[3] / (h * w))
            psnrs.append(psnr((x_hat - x).pow(2).mean()).item())
        results[f"q{q}_bpp"] = float(np.mean(bpps))
        results[f"q{q}_psnr"] = float(np.mean(psnrs))
    model.train()
    return results


def load_validation_images(paths: list[Path], limit: int = 512) -> list[torch.Tensor]:
    images = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        image.thumbnail((limit, limit))
        images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255)
    return images


def save_checkpoint(path: Path, state: dict) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def save_compact_state(checkpoint: str | Path, out: str | Path) -> Path:
    """The model part of a checkpoint (the average, if kept), its weights in float16, as a
    pickle-free `.npz` small enough to keep in the repository, so that a later session can
    continue training (with a fresh optimizer)."""
    import json

    from .weights import compact_array

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    arrays = {f"state.{name}": compact_array(tensor.numpy())
              for name, tensor in shipped_state(state).items()}
    meta = {"step": state["step"], "seconds": state["seconds"], "config": state["config"]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out = Path(out)
    np.savez_compressed(out, **arrays)
    return out


def widen_state(state: dict, model: TrainingModel, new_latents: float = 0.0) -> dict:
    """The state of a narrower model (smaller N and/or M, same H) embedded in `model`'s shapes,
    so that the wider model starts out coding as the narrow one did: the same image, and the
    same rate up to ~1e-5 bit per new latent element.

    Every new input of a layer gets zero weights, so new channels cannot disturb old ones; new
    channels keep `model`'s random weights otherwise, so they learn from the first step. New
    latent channels start at zero (zero rows at the end of g_a) with mean 0 and the smallest
    scale from h_s, so that they cost next to no bits until training gives them a use; the
    synthesis keeps random weights for them (their input is zero), which passes them a gradient.

    Started so, they stayed at zero (session 16): any bit they spend costs rate before the
    synthesis has learnt to use it. With `new_latents` > 0 they start live instead: g_a's
    random rows for them scaled by `new_latents`, each quality's gain the old channels' mean,
    and h_s's log-scale for them the old channels' mean, lowered by the log of how much
    shorter the new rows are than the old. The synthesis starts with zero weights from them,
    so the image is still exact and only the rate grows; their non-zero latents pass those
    weights a gradient. (With random ones the noise they added to the image drove them back
    to zero within a thousand steps, session 44.)
    """
    cfg = model.vae.cfg
    old_n, old_m = state["vae.g_a.0.weight"].shape[0], state["vae.log_gain"].shape[1]
    if any(name.startswith("context.") for name in state):
        raise ValueError("a state with a context model cannot be widened")
    if old_n > cfg.N or old_m > cfg.M or state["z_prior.quantiles"].shape[0] != cfg.H:
        raise ValueError(f"a state of widths N={old_n}, M={old_m} cannot be widened to "
                         f"N={cfg.N}, M={cfg.M}, H={cfg.H} (only N and M grow)")
    wide = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for name, tensor in state.items():
        if name.startswith("z_prior.") or wide[name].shape == tensor.shape:
            wide[name] = tensor
    for name in MODULATIONS[max(MODULATIONS)]:     # new channels start unmodulated
        if f"vae.log_modulation.{name}" in state and f"vae.log_modulation.{name}" in wide:
            old = state[f"vae.log_modulation.{name}"]
            wide[f"vae.log_modulation.{name}"][..., :old.shape[-1]] = old
    for name in ("vae.log_gain", "vae.log_inverse_gain"):
        wide[name][:, :old_m] = state[name]
        if new_latents:
            wide[name][:, old_m:] = state[name].mean(1, keepdim=True)
    last_a = f"vae.g_a.{len(model.vae.g_a) - 1}."
    # how much shorter the new latents' analysis rows are than the old ones, on average
    shrink = math.log(new_latents * wide[last_a + "weight"][old_m:].flatten(1).norm(dim=1).mean()
                      / state[last_a + "weight"].flatten(1).norm(dim=1).mean()) if new_latents else 0

    convolutions = (nn.Conv2d, nn.ConvTranspose2d)
    for transform in ("g_a", "g_s", "h_a", "h_s"):
        layers = getattr(model.vae, transform)
        last = max(i for i, module in enumerate(layers) if isinstance(module, convolutions))
        for i, module in enumerate(layers):
            prefix = f"vae.{transform}.{i}."
            if isinstance(module, GDN):
                c = state[prefix + "beta"].shape[0]
                wide[prefix + "beta"][:c] = state[prefix + "beta"]
                wide[prefix + "gamma"][:c, :c] = state[prefix + "gamma"]
                wide[prefix + "gamma"][:c, c:] = 0.0    # new channels do not normalize old ones
            if not isinstance(module, convolutions):
                continue
            weight, bias = state[prefix + "weight"], state[prefix + "bias"]
            new_weight, new_bias = wide[prefix + "weight"], wide[prefix + "bias"]
            # nn.Conv2d stores (out, in, k, k), nn.ConvTranspose2d (in, out, k, k): work on
            # (in, out) views of both (writes go through).
            if isinstance(module, nn.Conv2d):
                weight, new_weight = weight.transpose(0, 1), new_weight.transpose(0, 1)
            cin, cout = weight.shape[:2]
            if new_latents or not (transform == "g_s" and i == 0):
                new_weight[cin:] = 0.0
            if transform == "h_s" and i == last:    # [means, log-scales], M of each
                wide_m = new_bias.shape[0] // 2
                new_weight[:, :] = 0.0
                new_bias[:wide_m] = 0.0
                new_bias[wide_m:] = math.log(SCALE_MIN)
                for src, dst in ((0, 0), (old_m, wide_m)):
                    new_weight[:cin, dst:dst + old_m] = weight[:, src:src + old_m]
                    new_bias[dst:dst + old_m] = bias[src:src + old_m]
                if new_latents:
                    new_weight[:cin, wide_m + old_m:] = weight[:, old_m:].mean(1, keepdim=True)
                    new_bias[wide_m + old_m:] = bias[old_m:].mean() + shrink
                continue
            if transform == "g_a" and i == last:   # the new latent channels start at zero
                new_weight[:, cout:] *= new_latents
                new_bias[cout:] = 0.0
            new_weight[:cin, :cout] = weight
            new_bias[:cout] = bias
    return wide


def load_compact_state(model: nn.Module, path: str | Path,
                       new_latents: float = 0.0) -> tuple[int, float]:
    """Load a `save_compact_state` file, or a shipped weights file that carries its training
    state (`weights.training_state`), into `model`; returns (step, seconds) it had reached.
    A state of a narrower model is widened to `model`'s widths (see `widen_state`, which
    `new_latents` goes to)."""
    import json

    from .weights import training_state

    with np.load(path, allow_pickle=False) as arrays:
        meta = json.loads(arrays["meta"].tobytes().decode())
        state = {name[len("state."):]: arrays[name]
                 for name in arrays.files if name.startswith("state.")}
    if "hyper_layers" in meta:      # a shipped weights file
        state, meta = training_state(path)
        meta = {"step": meta["step"], "seconds": meta["train_seconds"]}
    state = {name: torch.from_numpy(array.astype(np.float32) if array.dtype == np.float16
                                    else array) for name, array in state.items()}
    level = modulation_level(path)
    if level > model.vae.cfg.modulated:
        raise ValueError(f"{path} holds a model of modulation level {level}: train it with "
                         f"--modulation {level} or higher")
    for name, sites in model.vae.modulation.items():
        # A higher level's extra scales start at one (log 0): it codes as the state did.
        key = f"vae.log_modulation.{name}"
        if key in state and len(state[key]) < len(sites):
            state[key] = torch.cat([state[key], torch.zeros(
                len(sites) - len(state[key]), *state[key].shape[1:])])
    current = model.state_dict()
    if any(current[name].shape != tensor.shape for name, tensor in state.items()
           if name.startswith("vae.")):
        state = widen_state(state, model, new_latents)
    for name, tensor in current.items():
        # A state without a context model or modulation starts them afresh (no corrections,
        # scales of one), which codes as the state did.
        if name.startswith(("context.", "vae.log_modulation.")) and name not in state:
            state[name] = tensor
    for name, tensor in state.items():   # the bottleneck's coding buffers change size
        if name in current and current[name].shape != tensor.shape:
            current[name].resize_(tensor.shape)
    model.load_state_dict(state)
    return meta["step"], meta["seconds"]


def latent_channels(path: str | Path) -> int:
    """M of the model in a weights file or compact state."""
    with np.load(path, allow_pickle=False) as arrays:
        name = "vae.log_gain" if "vae.log_gain" in arrays.files else "state.vae.log_gain"
        return arrays[name].shape[1]


def modulation_level(path: str | Path) -> int:
    """The level of per-quality modulation (`--modulation`, architecture.MODULATIONS) of the
    model in a weights file or compact state: 0 for none."""
    with np.load(path, allow_pickle=False) as arrays:
        counts = {name.rsplit(".", 1)[1]: len(arrays[name]) for name in arrays.files
                  if ".log_modulation." in name}
    for level, transforms in MODULATIONS.items():
        if counts == {name: len(sites) for name, sites in transforms.items()}:
            return level
    raise ValueError(f"{path}: modulated layers {counts} match no modulation level")


def distributed_context(device: str) -> tuple[int, int]:
    """(rank, world size). Under torchrun (WORLD_SIZE > 1) this joins the process group:
    gloo on CPUs, NCCL on GPUs."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), world


def build_training(widths: ModelConfig, context: bool, bf16: bool, device, lr: float,
                   aux_lr: float, modulation_lr: float = TrainConfig.modulation_lr,
                   context_lr: float = TrainConfig.context_lr
                   ) -> tuple[TrainingModel, torch.optim.Optimizer, torch.optim.Optimizer]:
    """A fresh model on `device` and its optimizers: Adam on everything but the bottleneck's
    quantiles, and Adam on those (they learn from the auxiliary loss alone). A modulated
    model's scales are a second group of the first, at `modulation_lr`, and a context model a
    further one at `context_lr` (each group's `lr_scale` is its rate over the first's, which
    the schedule keeps)."""
    model = TrainingModel(widths, context, bf16).to(device)
    if bf16:    # the layout bfloat16 convolutions run fastest in on tensor cores
        model = model.to(memory_format=torch.channels_last)
    def kind(name: str) -> str:
        if name.endswith("quantiles"):
            return "aux"
        if ".log_modulation." in name:
            return "modulation"
        return "context" if name.startswith("context.") else "main"

    parameters = {"main": [], "modulation": [], "context": [], "aux": []}
    for name, parameter in model.named_parameters():
        parameters[kind(name)].append(parameter)
    rates = {"main": lr, "modulation": modulation_lr, "context": context_lr}
    groups = [{"params": parameters[k], "lr_scale": rate / lr} for k, rate in rates.items()
              if parameters[k] or k == "main"]
    aux = parameters["aux"]
    fused = torch.device(device).type == "cuda"   # one kernel for the whole update
    return (model, torch.optim.Adam(groups, lr=lr, fused=fused),
            torch.optim.Adam(aux, lr=aux_lr, fused=fused))


def quality_balance(lam: torch.Tensor, exponent: float) -> torch.Tensor:
    """The weight of each crop's loss: (lambda / lambda of the middle quality)^-exponent.

    A crop's loss, and more so its gradient, grows steeply with lambda (at msh96b's state the
    gradient at quality 8 is ~40 times as long as at quality 0, and points elsewhere), so an
    unweighted mean trains mostly the high qualities. A rate-distortion curve is judged in
    relative rate at every quality alike, and the rate grows about as lambda^0.4 here, so an
    exponent near 0.4 weighs a 1% saving at every quality about alike."""
    if not exponent:
        return torch.ones_like(lam)
    return (lam / quality_lambda(MAX_QUALITY / 2)) ** -exponent


def training_step(trainer: nn.Module, model: TrainingModel, optimizer, aux_optimizer,
                  x: torch.Tensor, quality: torch.Tensor, clip: float,
                  world: int = 1, balance: float = 0.0) -> tuple[torch.Tensor, dict]:
    """One step of the rate-distortion loss (bpp + lambda * 255^2 * MSE per crop, weighted by
    `quality_balance` and averaged) with gradient clipping, then one of the entropy
    bottleneck's auxiliary loss. `trainer` is `model`, or its DistributedDataParallel wrapper
    in a run of `world` processes. Returns the loss and the model's outputs, left on the
    device."""
    import torch.distributed as dist

    if model.bf16:
        x = x.contiguous(memory_format=torch.channels_last)
    out = trainer(x, quality.to(x.device))
    lam = lambda_for_quality(quality).to(x.device)
    loss = (quality_balance(lam, balance) * (out["bpp"] + lam * 255**2 * out["mse"])).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], clip)
    optimizer.step()
    model.vae.clamp_parameters()
    aux_optimizer.zero_grad(set_to_none=True)
    model.z_prior.loss().backward()
    if world > 1:
        for group in aux_optimizer.param_groups:
            for p in group["params"]:
                dist.all_reduce(p.grad)
                p.grad /= world
    aux_optimizer.step()
    return loss, out


def train(cfg: TrainConfig, resume: bool = False, max_minutes: float | None = None,
          log=print) -> Path:
    """Run (or resume) training; returns the path of the last checkpoint.

    Without `max_minutes` the learning-rate schedule spans `cfg.steps`. With it, the schedule
    spans those minutes of this call instead (decay from `cfg.decay_from` of them), so a run
    fits a session whatever the speed of the machine; `cfg.steps` still caps it.

    Under torchrun every process trains on its own crops (batch `cfg.batch` each) and
    DistributedDataParallel averages the gradients; rank 0 validates, logs and checkpoints."""
    import torch.distributed as dist

    if cfg.init:     # a modulated model trains on as one
        cfg = replace(cfg, modulation=max(cfg.modulation, modulation_level(cfg.init)))
    if resume and (Path(cfg.out) / "checkpoint.pt").exists():
        # A resumed run goes on with its own model, whatever the command line says of it.
        saved = torch.load(Path(cfg.out) / "checkpoint.pt", map_location="cpu",
                           weights_only=True, mmap=True)["config"]
        cfg = replace(cfg, modulation=int(saved.get("modulation", 0)),
                      context=bool(saved.get("context", False)))
    rank, world = distributed_context(cfg.device)
    device = cfg.device
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True    # the crops' shape never changes
    torch.manual_seed(cfg.seed + rank)

    model, optimizer, aux_optimizer = build_training(
        ModelConfig(cfg.N, cfg.M, cfg.H, cfg.modulation), cfg.context, cfg.bf16, device, cfg.lr,
        cfg.aux_lr, cfg.modulation_lr, cfg.context_lr)
    generator = torch.Generator().manual_seed(cfg.seed + rank)
    step, spent = 0, 0.0
    warm_from = 0       # a fresh optimizer warms up again from this step
    saved_average = None

    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        step, spent = state["step"], state["seconds"]
        saved_average = state.get("average")
        if rank == 0:
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        else:   # other ranks continue on fresh, step-dependent streams
            generator.manual_seed(cfg.seed + rank + 1000 * step)
            torch.manual_seed(cfg.seed + rank + 1000 * step)
        log(f"resumed at step {step} after {spent / 3600:.2f} h")
    elif cfg.init:
        step, spent = load_compact_state(model, cfg.init, cfg.new_latents)
        warm_from = step
        log(f"initialised from {cfg.init} (step {step}, {spent / 3600:.2f} h); fresh optimizer")
    # the first latent channel that --new-latents started live, whose bits ramp into the loss
    ramp_from = (latent_channels(cfg.init) if cfg.init and cfg.new_latents and
                 cfg.new_latents_ramp and warm_from else cfg.M)
    average = WeightAverage(model, cfg.average) if rank == 0 and cfg.average else None
    if average is not None and saved_average is not None:
        average.model.load_state_dict(saved_average)
    shipped = average.model if average is not None else model
    trainer = model
    if world > 1:
        # The quantiles only enter the auxiliary loss, outside DDP's forward.
        trainer = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    trial = CompileTrial(trainer, cfg.compile, device, log)

    train_paths, holdout_paths = split_holdout(list_images(cfg.data), cfg.holdout)
    sampler = CropSampler(train_paths, cfg.patch, generator, device)
    validation_images = load_validation_images(holdout_paths) if rank == 0 else []
    kodak_images = load_validation_images(list_images(cfg.kodak), limit=768) if (
        rank == 0 and cfg.kodak) else []
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    log_file = open(log_path, "a", newline="") if rank == 0 else open(os.devnull, "w")
    writer = csv.writer(log_file)
    if new_log and rank == 0:
        writer.writerow(["step", "seconds", "lr", "loss", "bpp", "psnr", "validation"])

    def schedule() -> tuple[bool, float]:
        """(stop now, fraction of the schedule done), as rank 0 sees them."""
        if deadline is None:
            fraction = step / max(1, cfg.steps)
        else:
            fraction = 1.0 - (deadline - time.time()) / (60 * max_minutes)
        stop = step >= cfg.steps or fraction >= 1.0
        if world > 1:   # every rank follows rank 0, so that they stop at the same step
            state = torch.tensor([float(stop), fraction], dtype=torch.float64, device=device)
            dist.broadcast(state, 0)
            stop, fraction = bool(state[0].item()), float(state[1].item())
        return stop, fraction

    def checkpoint() -> None:
        if rank != 0:
            return
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "aux_optimizer": aux_optimizer.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "step": step, "seconds": spent,
            "average": None if average is None else average.model.state_dict(),
            "config": asdict(cfg),
        })

    model.train()
    started = time.time() - spent
    last_checkpoint = time.time()
    deadline = None if max_minutes is None else time.time() + 60 * max_minutes
    running = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
    progress = None
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=cfg.steps, initial=step, unit="step", mininterval=10,
                        dynamic_ncols=True)
    stop, done = schedule()
    while not stop:
        warmup = min(1.0, (step - warm_from + 1) / max(1, cfg.warmup)) if warm_from else 1.0
        lr = learning_rate(cfg, step, done) * warmup
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        if ramp_from < cfg.M:
            model.y_rate_weight[ramp_from:] = min(1.0, max(
                0.0, 2 * (step - warm_from) / cfg.new_latents_ramp - 1))
        x = sampler.sample(cfg.batch)
        quality = (cfg.lowest_quality
                   + torch.rand(cfg.batch, generator=generator) * (MAX_QUALITY - cfg.lowest_quality))
        loss, out_ = trial.step(lambda trainer: training_step(
            trainer, model, optimizer, aux_optimizer, x, quality, cfg.clip, world, cfg.balance))
        if average is not None:
            average.update(model, step)
        step += 1
        spent = time.time() - started
        stop, done = schedule()

        # Summed on the device and read every 100 steps: a read per step would make the CPU
        # wait for the GPU at every step instead of queueing the next one.
        running["loss"] += loss.detach()
        running["bpp"] += out_["bpp"].detach().mean()
        running["psnr"] += psnr(out_["mse"].detach()).mean()
        running["n"] += 1
        validation = ""
        # The weights that ship are validated; the live ones too, under live_, when they differ.
        if rank == 0 and (step % cfg.validate_every == 0 or stop):
            validation = " ".join(f"{k}={v:.3f}" for k, v in validate(shipped, validation_images).items())
            if shipped is not model:
                validation += " " + " ".join(
                    f"live_{k}={v:.3f}" for k, v in validate(model, validation_images).items())
        if kodak_images and (step % cfg.kodak_every == 0 or stop):
            validation += " " + " ".join(
                f"kodak_{k}={v:.3f}" for k, v in validate(shipped, kodak_images).items())
        if rank == 0 and (step % 100 == 0 or validation):
            n = running.pop("n")
            running = {k: float(v) for k, v in running.items()}
            writer.writerow([step, f"{spent:.0f}", f"{lr:.2e}",
                             f"{running['loss'] / n:.4f}", f"{running['bpp'] / n:.4f}",
                             f"{running['psnr'] / n:.2f}", validation])
            log_file.flush()
            progress.set_postfix(loss=f"{running['loss'] / n:.3f}", bpp=f"{running['bpp'] / n:.3f}",
                                 psnr=f"{running['psnr'] / n:.2f}", refresh=False)
            if validation:
                log(f"step {step}: {validation}")
            running = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
        if progress is not None:
            progress.update()
        if time.time() - last_checkpoint > 60 * cfg.checkpoint_minutes:
            checkpoint()
            last_checkpoint = time.time()
    checkpoint()
    if progress is not None:
        progress.close()
    if rank > 0 and cfg.save_replicas:
        torch.save(model.state_dict(), out / f"replica{rank}.pt")
    log_file.close()
    if world > 1:
        dist.barrier()
    return checkpoint_path
