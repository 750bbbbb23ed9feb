"""Encoder effort: refine one image's latents for the fixed decoder (Yang, Bamler & Mandt 2020).

The analysis transform is trained to do well on average; for one given image, gradient steps on
the rate-distortion objective of the chosen quality find latents that code it better. Only the
residuals round(y - mean) change: z, and with it the means and scales that the exact integer
hyper-synthesis computed, stay fixed, so the result is an ordinary file that any decoder reads
at the usual speed.

Rounding is made differentiable with the straight-through estimator: the forward pass sees the
rounded residuals (the loss is then the real rate-distortion cost, up to the tables' integer
frequencies), the backward pass treats rounding as the identity. Because that loss is exact, the
best iterate seen is kept, which makes more steps never worse than fewer.

Large images are refined window by window (64 x 64 latents, 1024 pixels, with 4 latents of fixed
context around each), so memory stays bounded; earlier windows' results are context for later.
"""

from __future__ import annotations

import functools

import numpy as np

from .architecture import quality_lambda
from .errors import InputError

EFFORT_STEPS = (0, 8, 20, 40)      # gradient steps per window at effort 0, 1, 2, 3
MAX_EFFORT = len(EFFORT_STEPS) - 1
LEARNING_RATE = 0.01               # Adam, in units of one quantization step
WINDOW = 64                        # latents per window side
CONTEXT = 4                        # fixed latents around a window (> the decoder's reach)
REACH = 2                          # latents a residual's change spreads over in the image


def check_effort(effort) -> int:
    """An effort level 0..MAX_EFFORT, or InputError."""
    if isinstance(effort, bool) or not isinstance(effort, (int, np.integer)) or not (
            0 <= effort <= MAX_EFFORT):
        raise InputError(f"effort must be an integer from 0 to {MAX_EFFORT}, not {effort!r}")
    return int(effort)


def refine_residual(bundle, image: np.ndarray, height: int, width: int, y_gained: np.ndarray,
                    means: np.ndarray, scale_index: np.ndarray, quality: float, steps: int,
                    device: str = "cpu", frozen: np.ndarray | None = None) -> np.ndarray:
    """Residuals (1, M, h, w) int64 that lower bits + lambda * 255^2 * MSE of the image.

    `image` is the padded input (3, 16h, 16w) in 0..1, of which the top-left `height` x `width`
    pixels are real (only they count); `y_gained` is the analysis output times the quality's
    gain (M, h, w); `means` (units of 1/MEAN_UNIT) and `scale_index` (1, M, h, w) come from the
    integer hyper-synthesis. `frozen`, a boolean (h, w) mask, marks latent positions whose
    residuals must stay (the anchors of a context model, from which the others' means and
    scales were computed). In each window only iterates that cost no more bits and no more
    distortion than the plain rounding are kept, so the result is never worse than it."""
    try:
        import torch
    except ImportError:
        raise InputError("encoder effort above 0 needs PyTorch: "
                         "pip install 'vaecodec[torch]'") from None
    from .codec import MEAN_UNIT
    from .entropy_coding import VALUE_MAX, VALUE_MIN, symbol_bits
    from .integer_net import scale_table

    def tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(device)

    vae = bundle.torch_model(quality).to(device, torch.float32)
    # Error is summed over the three channels: bits + lambda * 255^2 * MSE per pixel.
    lam = quality_lambda(quality) * 255**2 / 3
    mean = tensor(means[0] / MEAN_UNIT)
    scale = tensor(scale_table()[scale_index[0]])
    inverse_gain = tensor(bundle.gains(quality)[1])[:, None, None]
    continuous = tensor(y_gained) - mean
    current = torch.round(continuous).clamp(VALUE_MIN, VALUE_MAX)
    target = tensor(image)
    latent_h, latent_w = current.shape[1:]
    movable = torch.ones((1, latent_h, latent_w), device=device)
    if frozen is not None:
        movable[0, torch.from_numpy(np.asarray(frozen, bool)).to(device)] = 0
    for top in range(0, latent_h, WINDOW):
        for left in range(0, latent_w, WINDOW):
            inner = (slice(top, min(top + WINDOW, latent_h)), slice(left, min(left + WINDOW, latent_w)))
            window = (slice(max(0, top - CONTEXT), min(latent_h, top + WINDOW + CONTEXT)),
                      slice(max(0, left - CONTEXT), min(latent_w, left + WINDOW + CONTEXT)))
            table_bits = functools.partial(
                symbol_bits, table_index=scale_index[0][:, inner[0], inner[1]],
                tables=bundle.y_tables)
            _refine_window(torch, vae, lam, steps, current, continuous, mean, scale, inverse_gain,
                           target, height, width, inner, window, table_bits, movable)
    return current.clamp(VALUE_MIN, VALUE_MAX).cpu().numpy().astype(np.int64)[None]


def _refine_window(torch, vae, lam, steps, current, continuous, mean, scale, inverse_gain, target,
                   height, width, inner, window, table_bits, movable) -> None:
    """Refine current[:, inner] in place, decoding `window` and scoring the pixels the inner
    latents reach. Gradients come from the Gaussian rate; which iterate is kept is decided on
    the exact bits of the coding tables (`table_bits` of the inner residuals)."""
    from .networks import gaussian_likelihood

    (wt, wb), (wl, wr) = [(s.start, s.stop) for s in window]
    (it, ib), (il, ir) = [(s.start, s.stop) for s in inner]
    inner_rows, inner_cols = slice(it - wt, ib - wt), slice(il - wl, ir - wl)
    mask = torch.zeros_like(current[:, wt:wb, wl:wr])
    mask[:, inner_rows, inner_cols] = 1
    mask *= movable[:, wt:wb, wl:wr]
    fixed = current[:, wt:wb, wl:wr]
    # Pixels scored: those the inner latents reach, clipped to the window and the real image.
    st, sb = max(wt, it - REACH) * 16, min(wb, ib + REACH) * 16
    sl, sr = max(wl, il - REACH) * 16, min(wr, ir + REACH) * 16
    sb, sr = min(sb, height), min(sr, width)
    if sb <= st or sr <= sl:
        return                      # only padding here: the plain rounding is as good
    pixels = (slice(st - wt * 16, sb - wt * 16), slice(sl - wl * 16, sr - wl * 16))
    target = target[:, st:sb, sl:sr]
    window_mean, window_scale = mean[:, wt:wb, wl:wr], scale[:, wt:wb, wl:wr]

    variable = continuous[:, wt:wb, wl:wr].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([variable], lr=LEARNING_RATE)
    plain_bits = plain_error = best_cost = None
    best, rate_weight = fixed, 1.0
    for step in range(steps + 1):
        rounded = variable + (torch.round(variable) - variable).detach()
        residual = mask * rounded + (1 - mask) * fixed
        decoded = vae.g_s(((residual + window_mean) * inverse_gain)[None])[0]
        error = (decoded[:, pixels[0], pixels[1]] - target).pow(2).sum()
        bits = -(mask * torch.log2(gaussian_likelihood(residual, 0, window_scale))).sum()
        exact = float(table_bits(residual.detach()[:, inner_rows, inner_cols].cpu().numpy()).sum())
        if step == 0:
            plain_bits, plain_error = exact, error.item()
        exact_cost = exact + lam * error.item()
        if exact <= plain_bits and error.item() <= plain_error and (
                best_cost is None or exact_cost < best_cost):
            best_cost, best = exact_cost, residual.detach().clone()
        # The objective's own trade-off would spend bits on distortion; a kept iterate must
        # cost no more bits, so the weight of rate rises while the bits are over.
        rate_weight = rate_weight * 1.5 if exact > plain_bits else max(1.0, rate_weight / 1.2)
        cost = rate_weight * bits + lam * error
        if step == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        cost.backward()
        variable.grad *= mask
        # One schedule for every effort, so a higher effort continues a lower one's path (and,
        # keeping the best iterate, never ends worse).
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * (1 - 0.9 * (step + 1) / EFFORT_STEPS[-1])
        optimizer.step()
    current[:, wt:wb, wl:wr] = best
