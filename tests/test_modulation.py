"""Per-quality modulation of the transforms: the codec's folded weights compute what the
training model's scales do, a model whose scales are all one codes as the plain model, and a
modulated model trains, resumes, exports and codes."""

from dataclasses import asdict

import numpy as np
import pytest

pytest.importorskip("compressai")

import torch  # noqa: E402

from vaecodec import codec, numpy_backend, weights  # noqa: E402
from vaecodec.architecture import MODULATIONS, TRANSFORMS  # noqa: E402
from vaecodec.networks import HyperpriorVAE, ModelConfig  # noqa: E402

from .test_train import folder, tiny  # noqa: E402,F401

PLAIN_STATE = weights.available_models()["msh96d"]   # an unmodulated model's training state
LEVEL_ONE_STATE = weights.available_models()["msh96e"]   # a level-1 modulated model's


@pytest.mark.parametrize("level", [1, 2, 3, 4])
@pytest.mark.parametrize("quality", [0.0, 0.37, 1.0, 4.5, 8.0])
def test_folded_weights_compute_the_modulated_transforms(quality, level):
    torch.manual_seed(0)
    cfg = ModelConfig(8, 12, 8, modulated=level)
    vae = HyperpriorVAE(cfg).double()     # float64: level 2's products of scales grow large
    for table in vae.log_modulation.values():
        torch.nn.init.normal_(table, std=0.3)
    params = {name: tensor.detach().numpy() for name, tensor in vae.state_dict().items()}
    folded = weights.fold_modulation(params, quality, cfg)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        y = vae.transform("g_a", x, torch.tensor([quality]))
    inputs = {"g_a": x, "g_s": y, "h_a": y}
    for name, sites in MODULATIONS[level].items():
        with torch.no_grad():
            expected = vae.transform(name, inputs[name], torch.tensor([quality]))
        computed = numpy_backend.run(TRANSFORMS[name](cfg), folded, name, inputs[name][0].numpy())
        np.testing.assert_allclose(computed, expected[0].numpy(), rtol=1e-5, atol=1e-6)


def test_every_scale_of_the_highest_level_learns():
    """Each modulated site of each transform, first and last layers included, is on the
    training model's path: a training step gives every one of its scales a gradient."""
    from vaecodec.train import TrainingModel

    torch.manual_seed(0)
    model = TrainingModel(ModelConfig(8, 12, 8, modulated=max(MODULATIONS)))
    for table in model.vae.log_modulation.values():
        torch.nn.init.normal_(table, std=0.1)
    out = model(torch.rand(2, 3, 64, 64), torch.tensor([1.5, 6.0]))
    (out["bpp"] + 100 * out["mse"]).sum().backward()
    for name, table in model.vae.log_modulation.items():
        for site, grad in zip(MODULATIONS[max(MODULATIONS)][name], table.grad):
            assert grad.abs().max() > 0, (name, site)


def export_from_plain_state(folder, name, scale):
    """The plain model's state as a modulated model, its log-scales random of standard
    deviation `scale` (0: all scales one)."""
    from vaecodec.train import TrainConfig, TrainingModel, load_compact_state

    torch.manual_seed(0)
    model = TrainingModel(ModelConfig(modulated=True))
    load_compact_state(model, PLAIN_STATE)
    for table in model.vae.log_modulation.values():
        assert not table.any()       # a plain state starts with every scale at one
        torch.nn.init.normal_(table, std=scale)
    export_model(model, TrainConfig(modulation=True), folder / f"{name}.npz")


def export_model(model, config, out):
    """A training model exported as a shipped weights file `out`, by way of a checkpoint."""
    checkpoint = out.with_suffix(".pt")
    torch.save({"model": model.state_dict(), "step": 0, "seconds": 0.0,
                "config": asdict(config)}, checkpoint)
    weights.export(checkpoint, out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model ids: 'plain', 'ones' (modulated, every scale one), 'random' (modulated)."""
    folder = tmp_path_factory.mktemp("weights")
    (folder / "plain.npz").write_bytes(PLAIN_STATE.read_bytes())
    export_from_plain_state(folder, "ones", 0.0)
    export_from_plain_state(folder, "random", 0.05)
    patch = pytest.MonkeyPatch()
    patch.setattr(weights, "WEIGHTS_DIR", folder)
    weights.load_model.cache_clear()
    yield folder
    patch.undo()
    weights.load_model.cache_clear()


def test_scales_of_one_code_as_the_plain_model(models, crop):
    assert weights.load_model("ones").config.modulated
    plain = codec.compress(crop, quality=2.5, model="plain")
    ones = codec.compress(crop, quality=2.5, model="ones")
    assert len(plain) == len(ones)
    assert np.array_equal(np.asarray(codec.decompress(plain)), np.asarray(codec.decompress(ones)))


def test_a_modulated_model_codes_each_quality_with_its_own_scales(models, crop):
    bundle = weights.load_model("random")
    transforms = codec.transforms_for(bundle, "cpu", "float32", None)
    for quality in (0.5, 6.0):
        coded = codec.encode_latents(bundle, crop, quality, transforms)
        data = codec.compress(crop, quality=quality, model="random", postfilter=False,
                              correction=False)
        _, _, decoded, _ = codec.read(data)
        assert np.array_equal(decoded.residual, coded.residual)
        expected = codec.synthesize(bundle, coded, quality, *crop.shape[:2], transforms)
        assert np.array_equal(np.asarray(codec.decompress(data)), expected)
    # The same symbols decoded with another quality's scales make another image.
    other = codec.synthesize(bundle, coded, 5.0, *crop.shape[:2], transforms)
    assert not np.array_equal(other, expected)


def test_rate_control_and_effort_work_with_a_modulated_model(models, crop):
    data = codec.compress(crop, target_size=1500, model="random")
    assert len(data) <= 1500
    plain = codec.compress(crop, quality=3, model="random")
    refined = codec.compress(crop, quality=3, effort=1, model="random")
    assert len(refined) <= len(plain)


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_a_modulated_model_trains_resumes_and_codes_an_image(folder, tmp_path,  # noqa: F811
                                                             monkeypatch, level):
    from PIL import Image

    from vaecodec.train import train

    def config(out, steps):
        cfg = tiny(folder, tmp_path / out, steps)
        cfg.modulation = level
        return cfg

    straight = torch.load(train(config("a", 4), log=lambda *_: None), weights_only=True)
    train(config("b", 2), log=lambda *_: None)
    # --resume goes on with the run's modulation without being told it again
    checkpoint = train(tiny(folder, tmp_path / "b", 4), resume=True, log=lambda *_: None)
    resumed = torch.load(checkpoint, weights_only=True)
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    # The scales learn at their own rate: after 4 steps they have moved.
    assert resumed["model"]["vae.log_modulation.g_s"].abs().max() > 0
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "weights")
    weights.export(checkpoint, tmp_path / "weights" / "tinym.npz")
    weights.load_model.cache_clear()
    # A run started from a modulated model's weights file trains it on as one.
    cfg = tiny(folder, tmp_path / "c", 1)
    cfg.init = str(tmp_path / "weights" / "tinym.npz")
    continued = torch.load(train(cfg, log=lambda *_: None), weights_only=True)
    assert continued["config"]["modulation"] == level
    for name, sites in MODULATIONS[level].items():
        assert len(continued["model"][f"vae.log_modulation.{name}"]) == len(sites)
    try:
        assert weights.load_model("tinym").config.modulated == level
        image = np.asarray(Image.open(next(folder.iterdir())).convert("RGB"))
        assert codec.decompress(codec.compress(image, quality=3, model="tinym")).size == (200, 150)
    finally:
        weights.load_model.cache_clear()


def test_a_modulated_state_asks_for_a_modulated_model(models):
    from vaecodec.train import TrainingModel, load_compact_state

    with pytest.raises(ValueError, match="--modulation"):
        load_compact_state(TrainingModel(ModelConfig()), models / "random.npz")


@pytest.mark.parametrize("level", [2, 3, 4])
def test_a_level_one_model_extended_to_a_higher_level_codes_as_before(tmp_path, crop,
                                                                     monkeypatch, level):
    """Levels 2 to 4 add scales on the other side of each GDN, in the hyper-analysis and on
    each GDN's beta; started from a level-1 model (msh96e, the default of sessions 17-19)
    they are all one, and the files it writes are the same."""
    from vaecodec.train import TrainConfig, TrainingModel, load_compact_state

    model = TrainingModel(ModelConfig(modulated=level))
    load_compact_state(model, LEVEL_ONE_STATE)
    for name, table in model.vae.log_modulation.items():
        inherited = len(MODULATIONS[1].get(name, ()))
        assert table[inherited:].abs().max() == 0, name
        assert inherited == 0 or table[:inherited].abs().max() > 0, name
    export_model(model, TrainConfig(modulation=level), tmp_path / "extended.npz")
    (tmp_path / "level1.npz").write_bytes(LEVEL_ONE_STATE.read_bytes())
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    weights.load_model.cache_clear()
    try:
        assert weights.load_model("extended").config.modulated == level
        before = codec.compress(crop, quality=1.5, model="level1")
        after = codec.compress(crop, quality=1.5, model="extended")
        assert before[-len(after) // 2:] == after[-len(after) // 2:]
        assert len(before) == len(after)
        assert np.array_equal(np.asarray(codec.decompress(before)),
                              np.asarray(codec.decompress(after)))
    finally:
        weights.load_model.cache_clear()
