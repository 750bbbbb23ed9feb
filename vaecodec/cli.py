"""The `vaecodec` command: parses arguments, calls the Python API, prints results.

Errors from the API (`VaecodecError`) become one line on stderr and exit status 1; usage errors
exit with 2; Ctrl-C exits with 130, SIGTERM with 143 and SIGHUP with 129, each after the file
being written has been cleaned up (finished outputs stay, no partial one is left).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .architecture import LOWEST_QUALITY, MAX_QUALITY, MODULATIONS
from .errors import VaecodecError
from .format import DEFAULT_MAX_PIXELS


def _quality(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not LOWEST_QUALITY <= value <= MAX_QUALITY:
        raise argparse.ArgumentTypeError(
            f"quality runs from {LOWEST_QUALITY:g} to {MAX_QUALITY:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaecodec", description="A learned image codec.")
    commands = parser.add_subparsers(dest="command", required=True)

    def batch_options(sub):
        sub.add_argument("-o", "--output", type=Path, help="output file (one input only)")
        sub.add_argument("-d", "--directory", type=Path, help="folder for the outputs")
        sub.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
        sub.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
        sub.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                         help=f"refuse larger images (default {DEFAULT_MAX_PIXELS}, 2^28)")
        sub.add_argument("-q", "--quiet", action="store_true", help="print errors only")

    sub = commands.add_parser("compress", help="images to .vae files")
    sub.add_argument("inputs", nargs="+", type=Path)
    sub.add_argument("--quality", type=_quality, default=4.0,
                     help="0 (smallest file) to 8 (highest fidelity); fractions allowed; "
                          "below 1 the gains of levels 1 and 2 are extended")
    target = sub.add_mutually_exclusive_group()
    target.add_argument("--target-size", help="largest file size: bytes, or with KB / MB "
                        "(powers of 1024); the quality is searched for")
    target.add_argument("--target-bpp", type=float, help="largest bits per pixel")
    target.add_argument("--target-psnr", type=float, help="smallest PSNR in dB")
    sub.add_argument("--effort", type=int, choices=range(4), default=0, metavar="0..3",
                     help="encoder effort: 1-3 refine the latents for smaller files at the "
                     "same decoding speed (slower encoding; needs PyTorch)")
    sub.add_argument("--no-filter", dest="postfilter", action="store_false",
                     help="leave out the post-filter: encoding in about half the time, files "
                     "a few percent larger for the same fidelity")
    sub.add_argument("--no-correction", dest="correction", action="store_false",
                     help="leave out the corrections that high qualities add where they pay "
                     "(the file then holds the latents' image only, its latents at the quality "
                     "itself)")
    batch_options(sub)

    sub = commands.add_parser("decompress", help=".vae files to images (PNG by default)")
    sub.add_argument("inputs", nargs="+", type=Path)
    batch_options(sub)

    sub = commands.add_parser("info", help="print the header of .vae files")
    sub.add_argument("inputs", nargs="+", type=Path)
    sub.add_argument("--json", action="store_true", help="one JSON object per file")

    sub = commands.add_parser("anomaly", help="anomaly heat maps from bits and reconstruction error")
    sub.add_argument("inputs", nargs="+", type=Path)
    sub.add_argument("-o", "--output", type=Path, required=True, help="folder for the heat maps")
    sub.add_argument("--quality", type=_quality, default=4.0)

    sub = commands.add_parser("sample", help="draw images from the model's prior")
    sub.add_argument("-n", "--count", type=int, default=8)
    sub.add_argument("-o", "--output", type=Path, required=True, help="folder for the images")
    sub.add_argument("--quality", type=_quality, default=4.0)
    sub.add_argument("--size", default="256x256", help="WIDTHxHEIGHT")
    sub.add_argument("--seed", type=int, default=0)

    sub = commands.add_parser("interpolate", help="images between two images' latents")
    sub.add_argument("first", type=Path)
    sub.add_argument("second", type=Path)
    sub.add_argument("-o", "--output", type=Path, required=True, help="folder for the images")
    sub.add_argument("--steps", type=int, default=8)
    sub.add_argument("--quality", type=_quality, default=4.0)

    sub = commands.add_parser("train", help="train a model on a folder of images")
    sub.add_argument("--data", required=True)
    sub.add_argument("--out", required=True)
    sub.add_argument("--steps", type=int, default=40_000)
    sub.add_argument("--batch", type=int, default=8)
    sub.add_argument("--patch", type=int, default=128)
    sub.add_argument("--lr", type=float, default=4e-4)
    sub.add_argument("--decay-from", type=float, default=0.8,
                     help="fraction of the schedule (--steps, or --minutes when given) after "
                          "which the learning rate decays to 1/20")
    sub.add_argument("--widths", default="96,160,96", help="N,M,H channel widths")
    sub.add_argument("--new-latents", type=float, default=0.0,
                     help="when --init is narrower in M: start the new latent channels live, "
                          "their analysis rows at this scale of a fresh initialisation (0: at "
                          "zero, coding exactly as the narrower state did)")
    sub.add_argument("--new-latents-ramp", type=int, default=0,
                     help="with --new-latents: the steps over which the new channels' bits "
                          "come into the loss (none in the first half, then linearly up to all)")
    sub.add_argument("--context", action="store_true",
                     help="add a checkerboard context model (a run started with --init from a "
                          "state without one starts coding exactly as that state did)")
    sub.add_argument("--modulation", type=int, nargs="?", const=1, default=0,
                     choices=sorted(MODULATIONS),
                     help="per-quality modulation of the transforms, level 1 (one side of each "
                          "hidden GDN), 2 (both sides), 3 (2 and the hyper-analysis) or 4 (3 "
                          "and each GDN's beta); a run started with --init from a state of a "
                          "lower level starts coding exactly as that state did")
    sub.add_argument("--modulation-lr", type=float, default=1e-3,
                     help="peak learning rate of the modulation's scales")
    sub.add_argument("--context-lr", type=float, default=5e-4,
                     help="peak learning rate of the context model")
    sub.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    sub.add_argument("--bf16", action="store_true",
                     help="run the inner layers of the image transforms in bfloat16 "
                          "(faster on GPUs with tensor cores; see benchmarks/train_speed.py)")
    sub.add_argument("--compile", default="off", choices=["off", "on", "auto"],
                     help="torch.compile the model; auto times both on the run's first steps "
                          "and keeps the faster (under torchrun, as rank 0 measured it)")
    sub.add_argument("--threads", type=int, default=0)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    sub.add_argument("--init", default="", help="start from a shipped weights file (one "
                     "exported since session 10) or a compact training state, when OUT has "
                     "no checkpoint")
    sub.add_argument("--minutes", type=float,
                     help="train for this many minutes, with the learning-rate schedule spread "
                          "over them (--steps then only caps the run); stops with a checkpoint")
    sub.add_argument("--average", type=float, default=0.999,
                     help="decay of the moving average of the weights that ships (0: none)")
    sub.add_argument("--holdout", type=int, default=12, help="images kept for validation")
    sub.add_argument("--lowest-quality", type=float, default=LOWEST_QUALITY,
                     help="crops draw qualities from this one to the highest")
    sub.add_argument("--balance", type=float, default=0.0,
                     help="weigh each crop's loss by (lambda / middle lambda)^-BALANCE, so that "
                          "the low qualities are not drowned out (0: the plain mean)")
    sub.add_argument("--kodak", default="", help="evaluation images to report on (never trained on)")
    sub.add_argument("--kodak-every", type=int, default=5000)
    sub.add_argument("--save-replicas", action="store_true",
                     help="under torchrun, every rank also saves its final weights (for tests)")

    sub = commands.add_parser("bench", help="rate-distortion and speed against classical codecs")
    sub.add_argument("--images", type=Path, help="folder of images (default: the bundled Kodak)")
    sub.add_argument("--codecs", help="comma-separated: vaecodec,jpeg420,jpeg444,webp,avif,"
                     "jpeg2000,jpegxl (default: all available)")
    sub.add_argument("--qualities", help="vaecodec qualities, comma-separated (default: "
                     "0, 0.5 and 1 to 8)")
    sub.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    sub.add_argument("--out", type=Path, default=Path("bench-out"))
    sub.add_argument("--quick", action="store_true", help="two images, three points per codec")
    sub.add_argument("--threads", type=int)
    sub.add_argument("--repeats", type=int, help="timing repeats (default 3, quick 1)")

    sub = commands.add_parser("export", help="turn a training checkpoint into shipped weights "
                              "(which a later `train --init` can continue from)")
    sub.add_argument("checkpoint", type=Path)
    sub.add_argument("output", type=Path)

    sub = commands.add_parser("calibrate", help="refit a weights file's entropy-coding tables "
                              "to the symbols it codes on training photos (a new file: the "
                              "same images, fewer bits)")
    sub.add_argument("weights", type=Path)
    sub.add_argument("output", type=Path)
    sub.add_argument("--data", required=True, help="folder of training photos (never the "
                     "images the model will be judged on); its held-out photos are left out")
    sub.add_argument("--every", type=int, default=4, help="every n-th photo (default 4)")
    sub.add_argument("--workers", type=int, default=1)
    return parser


def _report(results, quiet: bool) -> int:
    failed = 0
    for result in results:
        if result.skipped:
            print(f"vaecodec: {result.message}", file=sys.stderr)
        elif result.ok:
            if not quiet:
                print(f"{result.source} -> {result.output} ({result.input_bytes} -> "
                      f"{result.output_bytes} bytes{result.message})")
        else:
            failed += 1
            print(f"vaecodec: {result.message}", file=sys.stderr)
    return 1 if failed else 0


def _save(image, path: Path) -> None:
    from .files import write_atomically

    write_atomically(path, lambda temporary: image.save(temporary, format="PNG"), force=True)


def _generate(args) -> int:
    """The VAE's other uses: anomaly maps, samples, interpolations."""
    import vaecodec

    args.output.mkdir(parents=True, exist_ok=True)
    if args.command == "anomaly":
        from .anomaly import heat_map

        for path in args.inputs:
            result = vaecodec.anomaly_map(path, quality=args.quality)
            target = args.output / f"{path.stem}-anomaly.png"
            _save(heat_map(path, result.score), target)
            regions = ", ".join(f"({r['x']},{r['y']}) {r['score']:.1f}" for r in result.regions[:3])
            print(f"{path}: score {result.image_score:.2f}; top regions {regions} -> {target}")
        return 0
    if args.command == "sample":
        from .sampling import grid

        try:
            width, height = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise vaecodec.InputError(f"--size must be WIDTHxHEIGHT, not {args.size}") from None
        images = vaecodec.sample(args.count, (width, height), args.quality, args.seed)
    else:
        from .sampling import grid

        images = vaecodec.interpolate(args.first, args.second, args.steps, args.quality)
    for i, image in enumerate(images):
        _save(image, args.output / f"{args.command}-{i:03d}.png")
    _save(grid(images), args.output / f"{args.command}-grid.png")
    print(f"{len(images)} images and {args.command}-grid.png in {args.output}")
    return 0


def run(args) -> int:
    import vaecodec

    if args.command == "compress":
        results = vaecodec.compress_files(
            args.inputs, quality=args.quality, output=args.output, directory=args.directory,
            force=args.force, device=args.device, progress=not args.quiet,
            max_pixels=args.max_pixels,
            target_size=args.target_size, target_bpp=args.target_bpp,
            target_psnr=args.target_psnr, effort=args.effort, postfilter=args.postfilter,
            correction=args.correction)
        return _report(results, args.quiet)
    if args.command == "decompress":
        results = vaecodec.decompress_files(
            args.inputs, output=args.output, directory=args.directory, force=args.force,
            device=args.device, progress=not args.quiet, max_pixels=args.max_pixels)
        return _report(results, args.quiet)
    if args.command == "info":
        from .files import read_bytes

        status = 0
        for path in args.inputs:
            try:
                fields = vaecodec.info(read_bytes(path))
            except VaecodecError as error:
                print(f"vaecodec: {path}: {error}", file=sys.stderr)
                status = 1
                continue
            if args.json:
                print(json.dumps({"file": str(path), **fields}))
            else:
                print(f"{path}:")
                width = max(map(len, fields))
                for key, value in fields.items():
                    print(f"  {key:{width}} {value}")
        return status
    if args.command in ("anomaly", "sample", "interpolate"):
        return _generate(args)
    if args.command == "train":
        from .train import TrainConfig, train

        n, m, h = (int(v) for v in args.widths.split(","))
        cfg = TrainConfig(data=args.data, out=args.out, steps=args.steps, batch=args.batch,
                          patch=args.patch, lr=args.lr, decay_from=args.decay_from,
                          device=args.device,
                          threads=args.threads, seed=args.seed, N=n, M=m, H=h,
                          holdout=args.holdout, save_replicas=args.save_replicas,
                          kodak=args.kodak, kodak_every=args.kodak_every, init=args.init,
                          average=args.average, context=args.context, bf16=args.bf16,
                          modulation=args.modulation, modulation_lr=args.modulation_lr,
                          context_lr=args.context_lr, new_latents=args.new_latents,
                          new_latents_ramp=args.new_latents_ramp,
                          compile=args.compile, lowest_quality=args.lowest_quality,
                          balance=args.balance)
        from tqdm import tqdm

        # Messages on lines of their own, not run into the progress bar (a log that drops the
        # bar's lines would drop them too).
        train(cfg, resume=args.resume, max_minutes=args.minutes, log=tqdm.write)
        return 0
    if args.command == "bench":
        from .benchmark import DEFAULT_IMAGES, VAECODEC_QUALITIES, run as run_benchmark

        from .codec import cuda_available

        device = args.device
        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        run_benchmark(
            images_dir=args.images or DEFAULT_IMAGES,
            codecs=args.codecs.split(",") if args.codecs else None,
            qualities=([float(q) for q in args.qualities.split(",")] if args.qualities
                       else VAECODEC_QUALITIES), device=device,
            out=args.out, quick=args.quick, threads=args.threads, repeats=args.repeats,
            command="vaecodec " + " ".join(sys.argv[1:]))
        print((args.out / "results.md").read_text())
        return 0
    if args.command == "export":
        from .weights import export

        print(export(args.checkpoint, args.output))
        return 0
    if args.command == "calibrate":
        from .calibration import calibrate
        from .train import TrainConfig, list_images, split_holdout

        training, _ = split_holdout(list_images(args.data), TrainConfig.holdout)
        print(calibrate(args.weights, training[::args.every], args.output, args.workers))
        return 0
    raise AssertionError(args.command)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"vaecodec: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    """Entry point of the `vaecodec` console script."""
    import warnings

    warnings.showwarning = _show_warning
    args = build_parser().parse_args(argv)
    # SIGTERM (and a closed terminal) stop the run as Ctrl-C does: through the clean-up of the
    # output being written, so no partial file is left.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _interrupt)
    try:
        return run(args)
    except VaecodecError as error:
        print(f"vaecodec: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vaecodec: interrupted", file=sys.stderr)
        return 130
    except Terminated as stop:
        print(f"vaecodec: stopped by {signal.Signals(stop.signal).name}", file=sys.stderr)
        return 128 + stop.signal


class Terminated(BaseException):
    """Raised by a SIGTERM or SIGHUP handler; a BaseException, like KeyboardInterrupt, so that
    no `except Exception` swallows it."""

    def __init__(self, number: int):
        super().__init__(number)
        self.signal = number


def _interrupt(number, frame) -> None:
    raise Terminated(number)


if __name__ == "__main__":
    sys.exit(main())
