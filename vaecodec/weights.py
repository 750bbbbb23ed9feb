"""Shipped weights: export from a training checkpoint, and loading without pickle.

A weights file is a NumPy `.npz` read with `allow_pickle=False` (no code can run at load). It
holds the float networks in float16, the hyper-synthesis already folded for integer evaluation
(and the context model's networks, for a model with one), the integer entropy tables for z and
y, and a JSON metadata record. NumPy's format is used
rather than safetensors because NumPy is already a dependency and gives the same guarantee.
Files exported since session 10 also carry what training needs beyond those (`train.*`: the
entropy bottleneck's float parameters, ~25 KB), so that one file both codes and continues
training (`training_state`), and a new model costs the history one file instead of two. Since
session 50 a shipped file's tables are measured on photos after export (`calibration.py`),
with one set of z tables per integer quality.

A file's identity is its model id plus the first 8 bytes of the SHA-256 of the weights file;
both are written into every `.vae` header, so a file is never decoded with other weights.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from .architecture import ModelConfig
from .entropy_coding import TableSet
from .errors import ModelMismatchError
from .integer_net import IntegerCheckerboardContext, IntegerHyperSynthesis

WEIGHTS_DIR = Path(__file__).parent / "weights"
# New weights ship under a new id and the earlier files stay, so that every `.vae` written by an
# earlier version keeps the weights it names (docs/format.md lists each model's sessions).
DEFAULT_MODEL = "msh96t"


def available_models() -> dict[str, Path]:
    """Model id -> weights file, for every model shipped in the package."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.npz"))}


@dataclass
class ModelBundle:
    """A loaded model: float weights, the exact entropy-parameter network and the tables."""

    model_id: str
    weights_hash: bytes
    meta: dict
    config: ModelConfig
    params: dict              # name -> float32 array, names as in networks.HyperpriorVAE
    hyper: IntegerHyperSynthesis
    z_tables: TableSet
    y_tables: TableSet
    context: IntegerCheckerboardContext | None = None   # None: the hyperprior alone
    _cache: dict = field(default_factory=dict, repr=False)

    def params_as(self, dtype) -> dict:
        """The float weights in `dtype` (cached)."""
        key = ("params", np.dtype(dtype).name)
        if key not in self._cache:
            self._cache[key] = {k: v.astype(dtype) for k, v in self.params.items()}
        return self._cache[key]

    def params_for(self, quality: float | None, dtype) -> dict:
        """The float weights in `dtype` that code `quality`: a modulated model's with the
        modulation folded in (`fold_modulation`; the last quality's kept), the others' as
        they are, whatever the quality. `quality` None: as they are, which only the layers
        that no modulation touches (see `codec.modulation_quality`) may use."""
        if not self.config.modulated or quality is None:
            return self.params_as(dtype)
        key = ("folded", np.dtype(dtype).name)
        if self._cache.get(key, (None,))[0] != quality:
            folded = fold_modulation(self.params, quality, self.config)
            self._cache[key] = (quality, {k: v.astype(dtype) for k, v in folded.items()})
        return self._cache[key][1]

    def z_table_level(self, quality: float) -> int:
        """Which set of z tables codes `quality`. A calibrated file (`calibration.py`) holds one
        set of H tables per integer quality 0, 1, ... (meta "z_table_levels"), and a quality
        uses its nearest integer's, found from the header's hundredths so that the encoder and
        every decoder pick the same; other files hold one set for every quality."""
        levels = int(self.meta.get("z_table_levels", 1))
        return min(levels - 1, (round(quality * 100) + 50) // 100)

    def gains(self, quality: float) -> tuple[np.ndarray, np.ndarray]:
        """Gain and inverse gain vectors (M,) for a quality, as float64."""
        return (np.exp(interpolate_levels(self.params["log_gain"], quality)),
                np.exp(interpolate_levels(self.params["log_inverse_gain"], quality)))

    def torch_model(self, quality: float | None = None):
        """The float networks as a PyTorch `HyperpriorVAE` (for GPU coding), without h_s; for
        a modulated model, the plain layers with the modulation of `quality` folded in (None:
        not folded, right only for the transforms that no modulation touches)."""
        key = quality if self.config.modulated else None
        cached = self._cache.get("torch")
        if cached is None or cached[0] != key:
            import torch

            from .networks import HyperpriorVAE

            params = self.params_for(quality, np.float32)
            vae = HyperpriorVAE(replace(self.config, modulated=False))
            state = {k: torch.from_numpy(v) for k, v in params.items()
                     if not k.startswith("log_modulation.")}
            missing, unexpected = vae.load_state_dict(state, strict=False)
            if unexpected or any(not name.startswith("h_s.") for name in missing):
                raise ModelMismatchError(f"weights of '{self.model_id}' do not match the model")
            vae.h_s = None   # coding uses the exact integer network instead
            vae.eval().requires_grad_(False)
            self._cache["torch"] = (key, vae)
        return self._cache["torch"][1]


@lru_cache(maxsize=4)
def load_model(model_id: str = DEFAULT_MODEL) -> ModelBundle:
    """Load a shipped model by id (cached). Needs NumPy only."""
    path = available_models().get(model_id)
    if path is None:
        raise ModelMismatchError(f"unknown model '{model_id}' (this vaecodec ships: "
                                 f"{', '.join(available_models()) or 'none'})")
    return load_file(path, model_id)


def load_file(path: str | Path, model_id: str | None = None) -> ModelBundle:
    """Load a weights file from any path (not cached), under `model_id` (default: the file's
    name without its suffix)."""
    path = Path(path)
    raw = path.read_bytes()
    arrays = dict(np.load(io.BytesIO(raw), allow_pickle=False))
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    params = {name[len("vae."):]: array.astype(np.float32)
              for name, array in arrays.items() if name.startswith("vae.")}
    layers = integer_layers(arrays, "hyper", meta["hyper_layers"])
    context = None
    if "context_layers" in meta:
        context = IntegerCheckerboardContext(
            integer_layers(arrays, "context", meta["context_layers"]),
            integer_layers(arrays, "entropy_parameters", meta["entropy_parameter_layers"]))
    config = ModelConfig(**meta["config"])
    z_tables = TableSet.from_arrays(arrays, "z")
    if len(z_tables) != meta.get("z_table_levels", 1) * config.H:
        raise ModelMismatchError(f"weights file {path.name} holds {len(z_tables)} z tables, "
                                 f"not one per hyper channel and quality level")
    return ModelBundle(
        model_id=model_id or path.stem, weights_hash=hashlib.sha256(raw).digest()[:8],
        meta=meta, config=config, params=params, hyper=IntegerHyperSynthesis(layers),
        z_tables=z_tables, y_tables=TableSet.from_arrays(arrays, "y"), context=context,
    )


def interpolate_levels(table: np.ndarray, quality: float) -> np.ndarray:
    """A per-level table (..., levels, C) at one quality: (..., C) in float64, linear between
    the two neighbouring levels (extended below the lowest, see
    `architecture.quality_weights`)."""
    from .architecture import quality_weights

    low, frac = quality_weights(quality)
    table = table.astype(np.float64)
    return table[..., low, :] * (1 - frac) + table[..., low + 1, :] * frac


def fold_modulation(params: dict, quality: float, config: ModelConfig) -> dict:
    """A modulated model's weights (see `architecture.MODULATIONS`) with the modulation at
    `quality` folded into the convolutions (and, at level 4, the GDNs' betas), which then code
    that quality as plain layers. A scale of a convolution's outputs scales its bias and its
    weight's output axis, one of its inputs the weight's input axis (a Conv2d's weight is (out,
    in, ...), a ConvTranspose2d's (in, out, ...)); a scale of a GDN's beta scales the beta."""
    from .architecture import TRANSFORMS, modulated_convolutions

    exact = {}      # the touched tensors in float64, rounded to their type once at the end
    for name, sites in modulated_convolutions(config).items():
        layers = TRANSFORMS[name](config)
        scales = np.exp(interpolate_levels(params[f"log_modulation.{name}"], quality))
        for scale, (i, side) in zip(scales, sites):
            if side == "beta":
                key = f"{name}.{i}.beta"
                exact[key] = exact.setdefault(key, params[key].astype(np.float64)) * scale
                continue
            key = f"{name}.{i}.weight"
            weight = exact.setdefault(key, params[key].astype(np.float64))
            axis = 0 if (layers[i][0] == "conv") == (side == "out") else 1
            shape = [1] * weight.ndim
            shape[axis] = -1
            exact[key] = weight * scale.reshape(shape)
            if side == "out":
                key = f"{name}.{i}.bias"
                exact[key] = exact.setdefault(key, params[key].astype(np.float64)) * scale
    return {**params, **{key: value.astype(params[key].dtype) for key, value in exact.items()}}


def integer_layers(arrays: dict, prefix: str, layers: list[dict]) -> list[dict]:
    """The layer records of an integer network (see `integer_net.IntegerNetwork`) with their
    stored weights `{prefix}.{i}.weight` and `.bias`."""
    return [{**layer, "weight": arrays[f"{prefix}.{i}.weight"],
             "bias": arrays[f"{prefix}.{i}.bias"]} for i, layer in enumerate(layers)]


def export(checkpoint: str | Path, out: str | Path, notes: dict | None = None) -> Path:
    """Turn a training checkpoint (its weight average, when the run kept one) into a shipped
    weights file."""
    import torch
    from torch import nn

    from .entropy_coding import gaussian_tables
    from .integer_net import fold_scale_index, scale_table
    from .train import TrainingModel, shipped_state

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = state["config"]
    cfg = ModelConfig(config["N"], config["M"], config["H"], config.get("modulation", False))
    model = TrainingModel(cfg, context=config.get("context", False))
    model.load_state_dict(shipped_state(state))
    model.eval()

    arrays: dict[str, np.ndarray] = {}
    # The float hyper-synthesis is not shipped: coding uses only the folded integer copy below.
    for name, tensor in model.vae.state_dict().items():
        if not name.startswith("h_s."):
            arrays[f"vae.{name}"] = tensor.numpy().astype(np.float16)

    # Their names in h_s, so that `training_state` can put the float layers back.
    hyper_modules = [f"h_s.{i}" for i, module in enumerate(model.vae.h_s)
                     if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))]
    convs = [model.vae.get_submodule(name) for name in hyper_modules]
    hyper_layers = []
    for i, module in enumerate(convs):
        weight = module.weight.detach().numpy()
        bias = module.bias.detach().numpy()
        if i == len(convs) - 1:
            weight, bias = fold_scale_index(weight, bias, cfg.M)
        arrays[f"hyper.{i}.weight"] = weight.astype(np.float16)
        arrays[f"hyper.{i}.bias"] = bias.astype(np.float32)
        hyper_layers.append({
            "kind": "deconv" if isinstance(module, nn.ConvTranspose2d) else "conv",
            "stride": module.stride[0], "relu": i < len(convs) - 1,
        })

    arrays.update(gaussian_tables(scale_table()).to_arrays("y"))
    arrays.update(factorized_tables(model.z_prior).to_arrays("z"))
    # The rest of the training state: the float h_s is the hyper layers above with the fold
    # undone, so only the bottleneck (and a context model's float layers) are added.
    for name, tensor in model.state_dict().items():
        if name.startswith(("z_prior.", "context.")):
            arrays[f"train.{name}"] = compact_array(tensor.numpy())
    meta = {"config": cfg.to_dict(), "hyper_layers": hyper_layers, "step": state["step"],
            "train_seconds": state["seconds"], "train_config": config,
            "hyper_modules": hyper_modules, **(notes or {})}
    if model.context is not None:
        # Only convolutions, with a ReLU after all but the last; coded by the integer network.
        for prefix, key in (("context", "context_layers"),
                            ("entropy_parameters", "entropy_parameter_layers")):
            convs = [m for m in getattr(model.context, prefix) if isinstance(m, nn.Conv2d)]
            meta[key] = [{"kind": "conv", "stride": 1, "relu": i < len(convs) - 1}
                         for i in range(len(convs))]
            for i, module in enumerate(convs):
                arrays[f"{prefix}.{i}.weight"] = module.weight.detach().numpy().astype(np.float16)
                arrays[f"{prefix}.{i}.bias"] = module.bias.detach().numpy().astype(np.float32)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    out.write_bytes(buffer.getvalue())
    return out


def compact_array(array: np.ndarray) -> np.ndarray:
    """A float32 array as kept in a training state: float16 when large. Small tensors stay in
    float32: they cost little, and among them are constants that float16 cannot hold (the
    bottleneck's likelihood bound, 1e-9, would become 0)."""
    if array.dtype == np.float32 and array.size >= 10_000:
        return array.astype(np.float16)
    return array


def training_state(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """The training state a weights file carries: every tensor of `train.TrainingModel`'s state
    dict as a NumPy array, and the file's metadata. The networks are the shipped float16 ones,
    so a run that starts from them starts from exactly the model that codes. Raises
    ModelMismatchError for files exported before session 10, which carry none."""
    from .integer_net import unfold_scale_index

    with np.load(path, allow_pickle=False) as file:
        arrays = dict(file)
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    if "hyper_modules" not in meta:
        raise ModelMismatchError(f"{path} carries no training state (exported before session 10)")
    state = {name: array for name, array in arrays.items() if name.startswith("vae.")}
    state.update({name[len("train."):]: array for name, array in arrays.items()
                  if name.startswith("train.")})
    modules = meta["hyper_modules"]
    for i, module in enumerate(modules):
        weight, bias = arrays[f"hyper.{i}.weight"], arrays[f"hyper.{i}.bias"]
        if i == len(modules) - 1:
            weight, bias = unfold_scale_index(weight, bias, meta["config"]["M"])
        state[f"vae.{module}.weight"] = weight.astype(np.float32)
        state[f"vae.{module}.bias"] = bias.astype(np.float32)
    return state, meta


def factorized_tables(z_prior) -> TableSet:
    """Integer tables of CompressAI's EntropyBottleneck, one per channel, over each channel's
    learned support (its tail quantiles) plus an escape."""
    import torch

    quantiles = z_prior.quantiles.detach()[:, 0, :]       # (C, 3): low tail, median, high tail
    lows = torch.floor(quantiles[:, 0]).long() - 1
    highs = torch.ceil(quantiles[:, 2]).long() + 1
    grid = torch.arange(int(lows.min()), int(highs.max()) + 1, dtype=torch.float32)
    channels = quantiles.shape[0]
    with torch.no_grad():
        likelihood = z_prior._likelihood(grid.expand(channels, 1, -1).contiguous())[0][:, 0]
    tables = []
    for c in range(channels):
        first = int(lows[c] - grid[0])
        probabilities = likelihood[c, first:first + int(highs[c] - lows[c]) + 1].double().numpy()
        escape = max(0.0, 1.0 - probabilities.sum())
        tables.append((int(lows[c]), np.append(probabilities, escape)))
    return TableSet.from_probabilities(tables)
