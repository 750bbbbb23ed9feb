"""The checkerboard context model in the codec: a two-pass decode that recovers the encoder's
symbols exactly, a context that corrects nothing codes as the hyperprior alone, a damaged split
of the latents section is a format error (and so is any mutated file, or it decodes), and
encoder effort refines around the anchors.

The models here are made from the training state of a shipped model plus a context model
(random small corrections, or none), exported into a temporary weights folder."""

from dataclasses import asdict

import numpy as np
import pytest

pytest.importorskip("compressai")

import torch  # noqa: E402

import vaecodec  # noqa: E402
from vaecodec import codec, format as vae_format, integer_net, weights  # noqa: E402
from vaecodec.errors import FormatError  # noqa: E402

from .conftest import MIN_PSNR, psnr  # noqa: E402

# An unmodulated model's weights file, which carries its training state.
TRAINING_STATE = weights.available_models()["msh96d"]


def export_model(folder, name, context_scale):
    """A model from the shipped training state, with a context model whose last layer has
    random weights of standard deviation `context_scale` (0: no corrections), or with none
    (None)."""
    from vaecodec.networks import ModelConfig
    from vaecodec.train import TrainConfig, TrainingModel, load_compact_state

    torch.manual_seed(0)
    with_context = context_scale is not None
    model = TrainingModel(ModelConfig(), context=with_context)
    load_compact_state(model, TRAINING_STATE)
    if context_scale:
        torch.nn.init.normal_(model.context.entropy_parameters[-1].weight, std=context_scale)
    checkpoint = folder / f"{name}.pt"
    torch.save({"model": model.state_dict(), "step": 0, "seconds": 0.0,
                "config": asdict(TrainConfig(context=with_context))}, checkpoint)
    weights.export(checkpoint, folder / f"{name}.npz")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model ids: 'plain' (no context), 'zero' (a context that corrects nothing) and 'random'."""
    folder = tmp_path_factory.mktemp("weights")
    for name, scale in (("plain", None), ("zero", 0.0), ("random", 0.01)):
        export_model(folder, name, scale)
    patch = pytest.MonkeyPatch()
    patch.setattr(weights, "WEIGHTS_DIR", folder)
    weights.load_model.cache_clear()
    yield folder
    patch.undo()
    weights.load_model.cache_clear()


def test_the_decoder_recovers_the_encoders_symbols_and_image(models, crop):
    bundle = weights.load_model("random")
    assert bundle.context is not None
    transforms = codec.transforms_for(bundle, "cpu", "float32", None)
    encoded = codec.encode_latents(bundle, crop, 4.0, transforms)
    data = vaecodec.compress(crop, quality=4, model="random")
    _, _, decoded, _ = codec.read(data)
    for name in ("z", "residual", "means", "scale_index"):
        assert np.array_equal(getattr(encoded, name), getattr(decoded, name)), name
    expected = codec.synthesize(bundle, encoded, 4.0, *crop.shape[:2], transforms)
    image = np.asarray(vaecodec.decompress(data))
    assert np.array_equal(image, expected)
    assert psnr(image, crop) > MIN_PSNR


def test_a_context_that_corrects_nothing_codes_as_the_hyperprior_alone(models, crop):
    plain = vaecodec.compress(crop, quality=6, model="plain")
    zero = vaecodec.compress(crop, quality=6, model="zero")
    _, _, a, _ = codec.read(plain)
    _, _, b, _ = codec.read(zero)
    for name in ("z", "residual", "means", "scale_index"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    # The same symbols in two streams instead of one: a few bytes of framing more.
    assert 0 < len(zero) - len(plain) <= 12


def test_the_integer_context_gives_the_same_parameters_in_any_tiling(models, crop, monkeypatch):
    bundle = weights.load_model("random")
    transforms = codec.transforms_for(bundle, "cpu", "float32", None)
    whole = codec.encode_latents(bundle, crop, 6.0, transforms)
    monkeypatch.setattr(integer_net, "CONTEXT_TILE_ROWS", 3)
    tiled = codec.encode_latents(bundle, crop, 6.0, transforms)
    for name in ("residual", "means", "scale_index"):
        assert np.array_equal(getattr(whole, name), getattr(tiled, name)), name


def test_the_sparse_context_convolution_equals_the_whole_one(models):
    """Evaluated at the non-anchors from its 12 live taps, the context convolution gives what
    the whole convolution gives there, at the borders and on odd sizes too."""
    from vaecodec.architecture import anchor_mask

    context = weights.load_model("random").context
    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (2, 3), (7, 5), (12, 9)):
        anchors = rng.integers(-40_000, 40_000, (context.weight.shape[0], height, width))
        others = ~anchor_mask(height, width)
        anchors[:, others] = 0
        rows, cols = np.nonzero(others)
        whole = context.context.run(anchors)[:, rows, cols]
        assert np.array_equal(context.features(anchors, rows, cols), whole), (height, width)


@pytest.mark.parametrize("split", ["beyond the end", "not whole words", "no room for it"])
def test_a_wrong_split_of_the_latents_section_is_a_format_error(models, crop, split):
    header, sections = vae_format.unpack(vaecodec.compress(crop, quality=3, model="random"))
    if split == "no room for it":
        sections["y"] = sections["y"][:3]
    else:
        first = len(sections["y"]) - 3 if split == "beyond the end" else 3
        sections["y"] = first.to_bytes(4, "little") + sections["y"][4:]
    with pytest.raises(FormatError):
        vaecodec.decompress(vae_format.pack(header, sections))


def test_sampling_from_a_context_model_is_repeatable(models):
    from vaecodec.sampling import sample

    first, again = sample(count=1, size=(64, 64), model="random"), sample(
        count=1, size=(64, 64), model="random")
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    assert first[0].size == (64, 64)


def test_mutated_files_of_a_context_model_decode_or_fail_cleanly(models, crop):
    from .fuzz import fuzz_decoder as fuzz

    files = [vaecodec.compress(crop[:64, :96], quality=q, model="random") for q in (2, 7)]
    reached = 0
    for n in range(200):
        outcome, past_header, detail = fuzz.check(fuzz.make_input(seed=5, n=n, files=files))
        assert outcome != "failure", (n, detail)
        reached += past_header
    assert reached > 50      # the mutations get past the header, to the two-pass decoder


def test_encoder_effort_refines_the_others_and_keeps_the_anchors(models, crop):
    # quality 8: with the default model's state and these random corrections, refining this crop at
    # qualities 2 and 5 finds no file both smaller and as good, so effort keeps the plain one
    # (without the correction layer, which would code the latents at 4.5)
    plain = vaecodec.compress(crop, quality=8, model="random", correction=False)
    refined = vaecodec.compress(crop, quality=8, model="random", effort=1, correction=False)
    assert len(refined) < len(plain)
    _, _, a, _ = codec.read(plain)
    _, _, b, _ = codec.read(refined)
    anchors = a.residual[0][:, ::2, ::2], b.residual[0][:, ::2, ::2]   # (even, even) anchors
    assert np.array_equal(*anchors)
    assert psnr(np.asarray(vaecodec.decompress(refined)), crop) >= psnr(
        np.asarray(vaecodec.decompress(plain)), crop) - 1e-9


def test_a_fresh_context_model_learns_at_its_own_rate():
    """Beside transforms that have converged, a new context model trains at `context_lr`: each
    parameter is in exactly one optimizer group, the context's alone in a group of that rate."""
    from vaecodec.networks import ModelConfig
    from vaecodec.train import build_training

    model, optimizer, aux = build_training(ModelConfig(8, 12, 8), True, False, "cpu", 5e-5, 1e-3,
                                           context_lr=5e-4)
    context = {id(p) for p in model.context.parameters()}
    groups = [{id(p) for p in group["params"]} for group in optimizer.param_groups]
    everything = [id(p) for g in optimizer.param_groups + aux.param_groups for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())
    assert context in groups
    rate = optimizer.param_groups[groups.index(context)]["lr_scale"] * 5e-5
    assert rate == pytest.approx(5e-4)
