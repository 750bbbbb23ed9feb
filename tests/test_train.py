"""Training smoke test: a tiny model trains a few steps, checkpoints, resumes exactly, and
exports weights the codec can use."""

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("compressai")

from vaecodec.train import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(4):
        base = rng.integers(0, 256, (1, 1, 3))
        ramp = np.linspace(0, 60, 200)[None, :, None]
        noise = rng.normal(0, 12, (150, 200, 3))
        Image.fromarray(np.clip(base + ramp + noise, 0, 255).astype(np.uint8)).save(
            folder / f"img{i}.jpg", quality=95)
    return folder


def tiny(folder, out, steps):
    return TrainConfig(data=str(folder), out=str(out), steps=steps, batch=2, patch=64,
                       holdout=1, validate_every=1000, N=8, M=8, H=8, threads=1)


def test_resume_continues_exactly(folder, tmp_path):
    straight = torch.load(train(tiny(folder, tmp_path / "a", 4), log=lambda *_: None),
                          weights_only=True)
    train(tiny(folder, tmp_path / "b", 2), log=lambda *_: None)
    resumed = torch.load(train(tiny(folder, tmp_path / "b", 4), resume=True, log=lambda *_: None),
                         weights_only=True)
    assert straight["step"] == resumed["step"] == 4
    for part in ("model", "average"):
        for name, tensor in straight[part].items():
            assert torch.equal(tensor, resumed[part][name]), (part, name)
    assert (tmp_path / "b" / "log.csv").exists()


def test_compact_state_continues_training(folder, tmp_path):
    from vaecodec.train import TrainingModel, load_compact_state, save_compact_state, shipped_state
    from vaecodec.networks import ModelConfig

    checkpoint = train(tiny(folder, tmp_path / "d", 2), log=lambda *_: None)
    compact = save_compact_state(checkpoint, tmp_path / "state.npz")
    model = TrainingModel(ModelConfig(8, 8, 8))
    assert load_compact_state(model, compact)[0] == 2
    original = shipped_state(torch.load(checkpoint, weights_only=True))
    for name, tensor in model.state_dict().items():
        assert torch.allclose(tensor.float(), original[name].float(), rtol=1e-3, atol=1e-4), name
    config = tiny(folder, tmp_path / "e", 3)
    config.init = str(compact)
    state = torch.load(train(config, log=lambda *_: None), weights_only=True)
    assert state["step"] == 3


def test_shipped_weights_carry_the_state_that_continues_training(folder, tmp_path):
    import json

    from vaecodec import weights
    from vaecodec.errors import ModelMismatchError
    from vaecodec.networks import ModelConfig
    from vaecodec.train import TrainingModel, load_compact_state, shipped_state

    checkpoint = train(tiny(folder, tmp_path / "w", 2), log=lambda *_: None)
    exported = weights.export(checkpoint, tmp_path / "tiny.npz")
    model = TrainingModel(ModelConfig(8, 8, 8))
    assert load_compact_state(model, exported)[0] == 2
    # Every tensor, the float hyper-synthesis (unfolded from the integer network's layers) and
    # the entropy bottleneck included, is the checkpoint's to float16 precision.
    original = shipped_state(torch.load(checkpoint, weights_only=True))
    assert model.state_dict().keys() == original.keys()
    for name, tensor in model.state_dict().items():
        assert torch.allclose(tensor.float(), original[name].float(), rtol=2e-3, atol=1e-4), name
    config = tiny(folder, tmp_path / "w2", 3)
    config.init = str(exported)
    assert torch.load(train(config, log=lambda *_: None), weights_only=True)["step"] == 3

    # Files exported before the state was added say so.
    with np.load(exported) as file:
        arrays = {name: file[name] for name in file.files if not name.startswith("train.")}
    meta = json.loads(arrays["meta"].tobytes().decode())
    del meta["hyper_modules"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ModelMismatchError, match="no training state"):
        load_compact_state(model, tmp_path / "old.npz")


def test_the_default_weights_continue_training_from_the_model_that_codes(crop):
    """The training state in the default weights file is the model the codec runs: its
    estimated rate and its image match a real file's (which adds the header, ~2% here, and
    the integer hyper-synthesis' rounding of the means)."""
    import vaecodec
    from vaecodec import weights
    from vaecodec.train import TrainingModel, load_compact_state

    from .conftest import psnr

    model = TrainingModel(weights.load_model().config).eval()
    load_compact_state(model, weights.available_models()[weights.DEFAULT_MODEL])
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = model(x, torch.tensor([4.0]))
    data = vaecodec.compress(crop, quality=4, postfilter=False)
    real_bpp = 8 * len(data) / (crop.shape[0] * crop.shape[1])
    assert abs(float(out["bpp"]) - real_bpp) < 0.05 * real_bpp
    estimated = (out["x_hat"][0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
    decoded = np.asarray(vaecodec.decompress(data))
    assert abs(psnr(estimated, crop) - psnr(decoded, crop)) < 0.2


def test_exported_weights_code_an_image(folder, tmp_path, monkeypatch):
    from vaecodec import codec, weights

    checkpoint = train(tiny(folder, tmp_path / "c", 2), log=lambda *_: None)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "weights")
    weights.export(checkpoint, tmp_path / "weights" / "tiny.npz")
    weights.load_model.cache_clear()
    try:
        image = np.asarray(Image.open(next(folder.iterdir())).convert("RGB"))
        data = codec.compress(image, quality=3, model="tiny")
        decoded = codec.decompress(data)
        assert decoded.size == (200, 150)
    finally:
        weights.load_model.cache_clear()


@pytest.mark.parametrize("modulation", [0, 3])
def test_a_context_model_trains_resumes_and_codes_an_image(folder, tmp_path, monkeypatch,
                                                           modulation):
    """With or without the per-quality modulation (a context model on the default model's
    line)."""
    from vaecodec import codec, weights

    def config(out, steps):
        cfg = tiny(folder, tmp_path / out, steps)
        cfg.context = True
        cfg.modulation = modulation
        return cfg

    straight = torch.load(train(config("a", 4), log=lambda *_: None), weights_only=True)
    train(config("b", 2), log=lambda *_: None)
    checkpoint = train(config("b", 4), resume=True, log=lambda *_: None)
    resumed = torch.load(checkpoint, weights_only=True)
    assert any(name.startswith("context.") for name in resumed["model"])
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "weights")
    weights.export(checkpoint, tmp_path / "weights" / "tinycb.npz")
    weights.load_model.cache_clear()
    try:
        assert weights.load_model("tinycb").context is not None
        assert weights.load_model("tinycb").config.modulated == modulation
        image = np.asarray(Image.open(next(folder.iterdir())).convert("RGB"))
        assert codec.decompress(codec.compress(image, quality=3, model="tinycb")).size == (200, 150)
    finally:
        weights.load_model.cache_clear()


def test_bfloat16_training_computes_nearly_the_float32_loss(folder, tmp_path):
    """--bf16 runs the inner transform layers in bfloat16: the same loss to within a few
    percent, float32 weights, and a run that trains and checkpoints."""
    from vaecodec.networks import HyperpriorVAE, ModelConfig
    from vaecodec.train import CropSampler, TrainingModel, list_images

    torch.manual_seed(0)
    model = TrainingModel(ModelConfig(16, 16, 8)).train()
    x = CropSampler(list_images(folder), 64, torch.Generator().manual_seed(0)).sample(4)
    quality = torch.tensor([1.0, 3.0, 5.5, 8.0])
    losses = {}
    for bf16 in (False, True):
        model.bf16 = bf16
        torch.manual_seed(1)   # the same noise on y
        out = model(x.contiguous(memory_format=torch.channels_last) if bf16 else x, quality)
        assert out["x_hat"].dtype == out["bpp"].dtype == torch.float32
        losses[bf16] = (out["bpp"] + 255**2 * 0.01 * out["mse"]).mean().item()
    assert abs(losses[True] - losses[False]) < 0.03 * losses[False], losses

    # A modulated model's per-quality scales must not promote the features back to float32
    # between layers: on the CPU such mixed-precision products ran 8 times slower.
    vae = HyperpriorVAE(ModelConfig(16, 16, 8, 3))
    inputs = {"g_a": (x, range(len(vae.g_a) - 1)),   # the layers autocast covers
              "g_s": (torch.randn(4, vae.g_s[0].out_channels, 8, 8), range(1, len(vae.g_s) - 1))}
    for name, (inner, layers) in inputs.items():
        with torch.autocast("cpu", torch.bfloat16):
            features = vae.transform(name, inner, quality, layers)
        assert features.dtype == torch.bfloat16, name

    cfg = tiny(folder, tmp_path / "bf16", 3)
    cfg.bf16 = True
    state = torch.load(train(cfg, log=lambda *_: None), weights_only=True)
    assert state["step"] == 3
    assert all(t.dtype != torch.bfloat16 and torch.isfinite(t).all()
               for t in state["model"].values() if t.is_floating_point())


def test_the_training_speed_benchmark_measures_both_precisions(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    command = [sys.executable, str(script), "--device", "cpu", "--widths", "8,8,8",
               "--modulation", "3", "--patch", "64", "--batches", "2", "--seconds", "0.2",
               "--warmup", "1", "--threads", "1",
               "--data", str(tmp_path / "none"), "--json", str(tmp_path / "speed.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "speed.json").read_text())
    assert [r["precision"] for r in report["rows"]] == ["float32", "bfloat16"]
    assert all(r["finite"] and r["steps"] >= 5 and r["mpixels_per_s"] > 0 for r in report["rows"])
    assert "fastest:" in result.stdout


@pytest.mark.parametrize("compile_mode", [
    "off", pytest.param("on", marks=pytest.mark.slow)])   # compiling takes a minute here
def test_distributed_training_with_two_cpu_processes(folder, tmp_path, compile_mode):
    """torchrun with two gloo processes: DDP keeps the replicas identical, rank 0 checkpoints;
    compiled too (--compile on compiles every rank alike)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", "29531", "-m", "vaecodec.cli", "train", "--data", str(folder),
               "--out", str(out), "--steps", "3", "--batch", "2", "--patch", "64",
               "--widths", "8,8,8", "--threads", "1", "--holdout", "1", "--save-replicas",
               "--compile", compile_mode]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch.compile failed" not in result.stdout + result.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    replica = torch.load(out / "replica1.pt", weights_only=True)
    for name, tensor in state["model"].items():
        assert torch.equal(tensor, replica[name]), name


def test_learning_rate_warms_up_holds_and_decays():
    from vaecodec.train import learning_rate

    cfg = TrainConfig(lr=1e-3, warmup=10, decay_from=0.5)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 50, 0.25) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50, 0.75) == pytest.approx(1e-3 * (1 - 0.95 / 2))
    assert learning_rate(cfg, 50, 1.0) == pytest.approx(5e-5)


def test_a_time_budget_spreads_the_schedule_over_the_minutes(folder, tmp_path):
    import csv

    config = tiny(folder, tmp_path / "t", 10**6)
    config.warmup, config.decay_from, config.validate_every = 0, 0.5, 10**6
    state = torch.load(train(config, max_minutes=0.05, log=lambda *_: None), weights_only=True)
    assert 0 < state["step"] < 10**6
    rows = list(csv.DictReader(open(tmp_path / "t" / "log.csv")))
    assert int(rows[-1]["step"]) == state["step"]
    assert rows[-1]["validation"], "the last step is validated"
    assert float(rows[-1]["lr"]) < 0.2 * config.lr, "the decay ends with the budget"


def test_crops_are_deterministic_for_a_seed_and_in_range(folder):
    from vaecodec.train import CropSampler, list_images

    def crops(seed):
        return CropSampler(list_images(folder), 64, torch.Generator().manual_seed(seed)).sample(6)

    batch = crops(1)
    assert batch.shape == (6, 3, 64, 64) and batch.dtype == torch.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0 and batch.std() > 0.01
    assert torch.equal(batch, crops(1)) and not torch.equal(batch, crops(2))


def test_crops_are_bicubic_antialiased_resizes_of_random_windows(folder):
    """The batched resize gives what resizing each window with `interpolate` gives."""
    from torch.nn import functional as F
    from vaecodec.train import CropSampler, list_images

    sampler = CropSampler(list_images(folder), 64, torch.Generator().manual_seed(5))
    batch = sampler.sample(6)
    replay = torch.Generator().manual_seed(5)   # the sampler's draws, in its order

    def uniform():
        return torch.rand((), generator=replay).item()

    flips = 0
    for crop in batch:
        image = sampler.images[int(uniform() * len(sampler.images))]
        h, w = image.shape[-2:]
        size = int(64 * (1.0 + uniform() * (min(min(w, h) / 64, 2.0) - 1.0)))
        left, top = int(uniform() * (w - size + 1)), int(uniform() * (h - size + 1))
        window = image[None, :, top:top + size, left:left + size].float()
        expected = F.interpolate(window, size=(64, 64), mode="bicubic", antialias=True,
                                 align_corners=False)[0].clamp(0, 255) / 255
        if uniform() < 0.5:
            expected, flips = expected.flip(-1), flips + 1
        assert (crop - expected).abs().max() < 1e-5
    assert 0 < flips < 6


def test_compact_state_keeps_rates_finite_and_weights_small(tmp_path):
    from vaecodec.networks import ModelConfig
    from vaecodec.train import TrainingModel, load_compact_state, save_compact_state

    torch.manual_seed(0)
    original = TrainingModel(ModelConfig(48, 48, 48)).eval()
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": original.state_dict(), "step": 5, "seconds": 1.0, "config": {}}, checkpoint)
    compact = save_compact_state(checkpoint, tmp_path / "state.npz")
    assert compact.stat().st_size < 0.6 * checkpoint.stat().st_size   # weights in float16
    loaded = TrainingModel(ModelConfig(48, 48, 48)).eval()
    load_compact_state(loaded, compact)
    # A z far outside anything trained on: its likelihood is the bottleneck's lower bound,
    # so its rate stays finite, as in the original model.
    z = torch.full((1, 48, 2, 2), 1e4)
    with torch.no_grad():
        want, got = original.z_prior(z)[1], loaded.z_prior(z)[1]
    assert torch.isfinite(torch.log2(want)).all() and torch.isfinite(torch.log2(got)).all()
    assert torch.allclose(got, want)


def test_a_narrow_state_widens_to_a_model_that_codes_the_same(tmp_path):
    from vaecodec.networks import GDN, ModelConfig
    from vaecodec.train import TrainingModel, load_compact_state, save_compact_state

    torch.manual_seed(0)
    narrow = TrainingModel(ModelConfig(8, 12, 8))
    with torch.no_grad():   # GDNs that mix channels, as trained ones do
        for module in narrow.modules():
            if isinstance(module, GDN):
                module.gamma.add_(0.05 * torch.rand_like(module.gamma))
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": narrow.state_dict(), "step": 7, "seconds": 1.0, "config": {}}, checkpoint)
    compact = save_compact_state(checkpoint, tmp_path / "state.npz")
    load_compact_state(narrow, compact)     # the same float16 rounding as the wide model gets
    wide = TrainingModel(ModelConfig(12, 16, 8))
    assert load_compact_state(wide, compact) == (7, 1.0)

    x = torch.rand(2, 3, 64, 64)
    quality = torch.tensor([1.5, 6.0])
    with torch.no_grad():
        want, got = narrow.eval()(x, quality), wide.eval()(x, quality)
    assert torch.allclose(got["x_hat"], want["x_hat"], atol=1e-5)
    assert torch.allclose(got["bpp"], want["bpp"], rtol=1e-3)
    # The new channels learn: a training step's gradient reaches the weights that make the new
    # latents, and the (zero) weights that lead from the new synthesis channels to the image.
    out = wide.train()(x, quality)
    (out["bpp"] + 0.01 * 255**2 * out["mse"]).sum().backward()
    assert wide.vae.g_a[-1].weight.grad[12:].abs().sum() > 0
    assert wide.vae.g_s[-1].weight.grad[8:].abs().sum() > 0
    with pytest.raises(ValueError, match="cannot be widened"):
        load_compact_state(TrainingModel(ModelConfig(8, 8, 8)), compact)


def test_new_latent_channels_can_start_live(tmp_path):
    from vaecodec.networks import ModelConfig
    from vaecodec.train import TrainingModel, load_compact_state, save_compact_state

    torch.manual_seed(0)
    narrow = TrainingModel(ModelConfig(8, 12, 8))
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": narrow.state_dict(), "step": 7, "seconds": 1.0, "config": {}}, checkpoint)
    compact = save_compact_state(checkpoint, tmp_path / "state.npz")
    load_compact_state(narrow, compact)
    wide = TrainingModel(ModelConfig(8, 16, 8))
    load_compact_state(wide, compact, new_latents=0.5)

    x, quality = torch.rand(2, 3, 64, 64), torch.tensor([2.0, 8.0])
    with torch.no_grad():
        narrow_y = narrow.vae.transform("g_a", x, quality)
        wide_y = wide.vae.transform("g_a", x, quality)
        out = wide.eval()(x, quality)
        want = narrow.eval()(x, quality)
    assert torch.equal(wide_y[:, :12], narrow_y)     # the old channels are untouched
    assert wide_y[:, 12:].abs().mean() > 0.1 * narrow_y.abs().mean()
    # the synthesis ignores the new channels until training teaches it to use them
    assert torch.allclose(out["x_hat"], want["x_hat"], atol=1e-5)
    assert torch.isfinite(out["bpp"]).all()
    # each quality's gain for the new channels is where the old channels' are on average
    assert torch.allclose(wide.vae.log_gain[:, 12:],
                          narrow.vae.log_gain.mean(1, keepdim=True).expand(-1, 4))

    # While their bits ramp into the loss, training counts fewer of them; evaluation all.
    wide.y_rate_weight[12:] = 0.0
    torch.manual_seed(1)
    ramped = wide.train()(x, quality)["bpp"]
    wide.y_rate_weight[12:] = 1.0
    torch.manual_seed(1)
    assert (ramped < wide(x, quality)["bpp"]).all()
    wide.y_rate_weight[12:] = 0.0
    with torch.no_grad():
        assert torch.equal(wide.eval()(x, quality)["bpp"], out["bpp"])


def test_a_run_widened_from_a_state_ramps_the_new_latents_bits_in(folder, tmp_path):
    from vaecodec.train import save_compact_state

    compact = save_compact_state(train(tiny(folder, tmp_path / "narrow", 2), log=lambda *_: None),
                                 tmp_path / "state.npz")
    config = tiny(folder, tmp_path / "wide", 4)
    config.M, config.init, config.new_latents, config.new_latents_ramp = 12, str(compact), 0.5, 4
    state = torch.load(train(config, log=lambda *_: None), weights_only=True)
    assert state["step"] == 4 and state["model"]["vae.log_gain"].shape == (8, 12)
    assert state["model"]["vae.g_a.6.weight"][8:].abs().sum() > 0


def test_the_weight_average_is_what_ships(folder, tmp_path):
    from vaecodec import weights

    config = tiny(folder, tmp_path / "avg", 3)
    config.warmup, config.lr = 0, 1e-2      # steps large enough for the average to lag
    checkpoint = train(config, log=lambda *_: None)
    state = torch.load(checkpoint, weights_only=True)
    name = "vae.g_a.0.weight"
    live, average = state["model"][name], state["average"][name]
    assert not torch.allclose(live, average, atol=1e-4), "the average lags the live weights"
    shipped = np.load(weights.export(checkpoint, tmp_path / "tiny.npz"))[name]
    assert np.abs(shipped - average.numpy()).max() < 0.1 * np.abs(shipped - live.numpy()).max()


def test_weight_average_follows_an_exponential_decay():
    from vaecodec.train import WeightAverage

    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    average = WeightAverage(model, decay=0.5)
    for step in range(3):
        model.weight.data += 1.0
        average.update(model, step)
    # decays: min(0.5, 1/10), min(0.5, 2/11), min(0.5, 3/12) -> 0.1, 2/11, 0.25
    want = 0.0
    for value, decay in ((1, 0.1), (2, 2 / 11), (3, 0.25)):
        want = decay * want + (1 - decay) * value
    assert torch.allclose(average.model.weight, torch.full((1, 2), want))
    average.update(model, 10_000)   # a trained model: the full decay
    assert torch.allclose(average.model.weight, torch.full((1, 2), 0.5 * want + 0.5 * 3))


def test_training_gains_and_lambdas_are_the_codecs_over_the_whole_scale():
    """Training draws qualities below 1 too: there its gains and lambdas must be the ones the
    codec extrapolates, or it would train for qualities the codec never uses."""
    from vaecodec.architecture import quality_lambda
    from vaecodec.networks import lambda_for_quality
    from vaecodec.weights import load_model

    bundle = load_model()
    vae = bundle.torch_model()
    qualities = [0.0, 0.3, 0.5, 0.99, 1.0, 2.5, 7.25, 8.0]
    gain, inverse_gain = vae.gains(torch.tensor(qualities))
    for i, q in enumerate(qualities):
        expected_gain, expected_inverse = bundle.gains(q)
        np.testing.assert_allclose(gain[i, :, 0, 0].numpy(), expected_gain, rtol=1e-5)
        np.testing.assert_allclose(inverse_gain[i, :, 0, 0].numpy(), expected_inverse, rtol=1e-5)
    np.testing.assert_allclose(lambda_for_quality(torch.tensor(qualities)).numpy(),
                               [quality_lambda(q) for q in qualities], rtol=1e-5)


def test_z_rate_is_the_entropy_bottlenecks_forward():
    """TrainingModel.z_rate takes the steps of CompressAI's EntropyBottleneck.forward (without
    its device-side permutation): the same noisy or rounded z and the same likelihoods."""
    from vaecodec.networks import ModelConfig
    from vaecodec.train import TrainingModel

    torch.manual_seed(0)
    model = TrainingModel(ModelConfig(8, 8, 8))
    z = 3 * torch.randn(2, 8, 4, 5)
    for training in (True, False):
        model.train(training)
        torch.manual_seed(1)
        expected = model.z_prior(z)
        torch.manual_seed(1)
        got = model.z_rate(z)
        for a, b in zip(expected, got):
            assert a.shape == b.shape and torch.equal(a, b)


def test_compile_auto_keeps_the_faster_model_and_survives_a_failing_compiler(
        folder, tmp_path, monkeypatch):
    """--compile auto times eager and compiled steps of the run itself and keeps the faster;
    a compiler that fails leaves the run training eagerly. Every step trains either way."""
    import time

    from vaecodec import train as training

    monkeypatch.setattr(training.CompileTrial, "STEPS", 3)

    def slow_compile(model):
        def slow(*args):
            time.sleep(0.2)
            return model(*args)
        return slow

    def broken_compile(model):
        def broken(*args):
            raise RuntimeError("no compiler here\nmore detail")
        return broken

    for compiler, mode, expected in ((slow_compile, "auto", "training on eagerly"),
                                     (broken_compile, "on", "torch.compile failed")):
        monkeypatch.setattr(torch, "compile", compiler)
        messages = []
        config = tiny(folder, tmp_path / mode, 30)
        config.compile = mode
        state = torch.load(train(config, log=messages.append), weights_only=True)
        assert state["step"] == 30
        assert any(expected in m for m in messages), messages
        assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_compile_auto_under_torchrun_follows_rank_zero(tmp_path):
    """Under torchrun the timing trial's decision is rank 0's on every rank, so the ranks train
    the same graph even where their own timings disagree (here made to, with a stand-in
    compiler: on rank 0 the compiled model is slower, on rank 1 faster)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "trial.py"
    script.write_text(
        "import time, torch, torch.distributed as dist\n"
        "from vaecodec.train import CompileTrial\n"
        "dist.init_process_group('gloo')\n"
        "rank = dist.get_rank()\n"
        "CompileTrial.STEPS = 3\n"
        "def stand_in(model):\n"
        "    return lambda: (time.sleep(0.03 * (rank == 0)), 'compiled')[1]\n"
        "torch.compile = stand_in\n"
        "def eager():\n"
        "    time.sleep(0.03 * (rank == 1))\n"
        "    return 'eager'\n"
        "trial = CompileTrial(eager, 'auto', 'cpu', lambda *_: None)\n"
        "for _ in range(2 * (CompileTrial.SETTLE + CompileTrial.STEPS) + 1):\n"
        "    last = trial.step(lambda trainer: trainer())\n"
        "print(f'rank {rank} trains {last}', flush=True)\n"
        "dist.destroy_process_group()\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", "29533", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rank 0 trains eager" in result.stdout and "rank 1 trains eager" in result.stdout, \
        result.stdout


@pytest.mark.slow
def test_compiled_training_trains(folder, tmp_path):
    """--compile on with the real torch.compile (about a minute of compilation on a CPU)."""
    config = tiny(folder, tmp_path / "c", 4)
    config.compile = "on"
    messages = []
    state = torch.load(train(config, log=messages.append), weights_only=True)
    assert state["step"] == 4 and not any("failed" in m for m in messages)
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_quality_balance_weighs_low_qualities_up():
    """--balance weighs a crop's loss by (lambda / lambda of quality 4)^-exponent: 1 at the
    middle quality, more below it, less above; exponent 0 is the plain mean."""
    from vaecodec.networks import lambda_for_quality
    from vaecodec.train import quality_balance

    lam = lambda_for_quality(torch.tensor([0.0, 2.0, 4.0, 6.0, 8.0]))
    weights = quality_balance(lam, 0.4)
    assert torch.allclose(weights[2], torch.tensor(1.0))
    assert torch.all(weights[:-1] > weights[1:])
    assert torch.allclose(weights[0] * weights[-1], (lam[0] * lam[-1] / lam[2] ** 2) ** -0.4)
    assert torch.equal(quality_balance(lam, 0.0), torch.ones(5))


def test_a_run_from_a_state_may_skip_the_warm_up(folder, tmp_path):
    from vaecodec.train import save_compact_state

    compact = save_compact_state(train(tiny(folder, tmp_path / "start", 2), log=lambda *_: None),
                                 tmp_path / "state.npz")
    config = tiny(folder, tmp_path / "cold", 4)
    config.init, config.warmup = str(compact), 0
    state = torch.load(train(config, log=lambda *_: None), weights_only=True)
    assert state["step"] == 4
