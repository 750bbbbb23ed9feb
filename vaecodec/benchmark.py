"""The rate-distortion and speed benchmark behind `vaecodec bench`.

Every codec runs on the same images in the same run: vaecodec through real `.vae` files (the
bytes written are the bytes counted), the classical codecs through Pillow. Per image it records
bpp, PSNR (RGB), MS-SSIM, encode and decode time (median of repeats after a warm-up) and peak
memory (the rise of the process's resident memory during the call, sampled every 2 ms).
Averages are means of per-image metrics, as CompressAI's evaluation reports them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .metrics import bd_rate, ms_ssim, ms_ssim_db, psnr

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "reference"
DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / "data" / "kodak"
VAECODEC_QUALITIES = (0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8)


@dataclass
class Measurement:
    codec: str
    setting: float
    image: str
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    peak_mb: float


class PeakMemory:
    """Peak rise of resident memory while the block runs (Linux /proc; nan elsewhere)."""

    def __init__(self):
        self.peak_mb = math.nan

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        try:
            self._base = self._peak = self._rss()
        except OSError:
            return self
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self._peak = max(self._peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss())
            self.peak_mb = (self._peak - self._base) / 2**20


def timed(function, repeats: int):
    """(result, median seconds, peak MB) of `function()` over `repeats` runs."""
    times, result = [], None
    with PeakMemory() as memory:
        for _ in range(repeats):
            start = time.perf_counter()
            result = function()
            times.append(time.perf_counter() - start)
    return result, statistics.median(times), memory.peak_mb


def machine_note(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    note = f"CPU: {cpu}, {os.cpu_count()} threads"
    if device == "cuda":
        import torch

        note += f"; GPU: {torch.cuda.get_device_name(0)}"
    return note


def load_images(folder: Path, limit: int | None) -> list[tuple[str, np.ndarray]]:
    paths = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
    if limit:
        paths = paths[:limit]
    return [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def measure_vaecodec(images, qualities, out: Path, device: str, repeats: int, progress):
    from . import compress, decompress

    folder = out / "vae"
    folder.mkdir(parents=True, exist_ok=True)
    compress(images[0][1][:64, :64], device=device)          # warm-up: load the model
    results = []
    for quality in qualities:
        for name, rgb in images:
            path = folder / f"{name}-q{quality:g}.vae"

            def encode():
                path.write_bytes(compress(rgb, quality=quality, device=device))

            _, encode_s, encode_mb = timed(encode, repeats)
            decoded, decode_s, decode_mb = timed(
                lambda: np.asarray(decompress(path.read_bytes(), device=device)), repeats)
            results.append(Measurement(
                "vaecodec", quality, name, 8 * path.stat().st_size / (rgb.shape[0] * rgb.shape[1]),
                psnr(rgb, decoded), ms_ssim(rgb, decoded), encode_s, decode_s,
                max(encode_mb, decode_mb)))
            progress.update()
    return results


def measure_classical(codec, settings, images, repeats: int, progress):
    results = []
    for setting in settings:
        for name, rgb in images:
            data, encode_s, encode_mb = timed(lambda: codec.encode(rgb, setting), repeats)
            decoded, decode_s, decode_mb = timed(lambda: codec.decode(data), repeats)
            results.append(Measurement(
                codec.name, setting, name, 8 * len(data) / (rgb.shape[0] * rgb.shape[1]),
                psnr(rgb, decoded), ms_ssim(rgb, decoded), encode_s, decode_s,
                max(encode_mb, decode_mb)))
            progress.update()
    return results


def summarize(measurements: list[Measurement]) -> dict[str, list[dict]]:
    """Per codec, per setting: mean bpp, PSNR, MS-SSIM over images; median times; max memory."""
    table: dict[str, dict[float, list[Measurement]]] = {}
    for m in measurements:
        table.setdefault(m.codec, {}).setdefault(m.setting, []).append(m)
    summary = {}
    for codec, by_setting in table.items():
        rows = []
        for setting, group in by_setting.items():
            rows.append({
                "setting": setting, "bpp": float(np.mean([m.bpp for m in group])),
                "psnr": float(np.mean([m.psnr for m in group])),
                "ms_ssim": float(np.mean([m.ms_ssim for m in group])),
                "encode_s": statistics.median(m.encode_s for m in group),
                "decode_s": statistics.median(m.decode_s for m in group),
                "peak_mb": float(np.nanmax([m.peak_mb for m in group])),
            })
        summary[codec] = sorted(rows, key=lambda r: r["bpp"])
    return summary


def load_references(folder: Path = REFERENCE_DIR) -> dict[str, dict]:
    """Published Kodak curves stored as data (see benchmarks/reference/README.md)."""
    references = {}
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        results = data["results"]
        if "bpp" in results and "psnr-rgb" in results:
            references[path.stem] = {"name": data.get("name", path.stem),
                                     "bpp": results["bpp"], "psnr": results["psnr-rgb"],
                                     "ms_ssim": results.get("ms-ssim-rgb") or results.get("ms-ssim")}
    return references


def bd_rates(summary: dict, references: dict) -> list[dict]:
    """BD-rate of vaecodec against every other curve, on PSNR and on MS-SSIM (dB)."""
    ours = summary.get("vaecodec")
    if not ours:
        return []
    bpp = [r["bpp"] for r in ours]
    ours_psnr = [r["psnr"] for r in ours]
    ours_msssim = [ms_ssim_db(r["ms_ssim"]) for r in ours]
    rows = []
    curves = [(name, "measured in this run", [r["bpp"] for r in rows_],
               [r["psnr"] for r in rows_], [r["ms_ssim"] for r in rows_])
              for name, rows_ in summary.items() if name != "vaecodec"]
    curves += [(name, "published (" + ref["name"] + ")", ref["bpp"], ref["psnr"], ref["ms_ssim"])
               for name, ref in references.items()]
    for name, source, rates, quality, msssim in curves:
        row = {"against": name, "source": source,
               "bd_rate_psnr": bd_rate(rates, quality, bpp, ours_psnr)}
        if msssim:
            row["bd_rate_ms_ssim"] = bd_rate(rates, [ms_ssim_db(v) for v in msssim], bpp,
                                             ours_msssim)
        rows.append(row)
    return rows


def speed_against_compressai(images, device: str, repeats: int) -> dict | None:
    """vaecodec's compress/decompress next to CompressAI's for a mean-scale hyperprior of the
    same widths (untrained weights: speed does not depend on them), same images, same run."""
    try:
        import torch
        from compressai.models import MeanScaleHyperprior
    except ImportError:
        return None
    from . import compress, decompress
    from .weights import load_model

    config = load_model().config
    torch.manual_seed(0)
    net = MeanScaleHyperprior(N=config.N, M=config.M).eval().to(device)
    net.update(force=True)

    def tensor(rgb):
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div(255).to(device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def compressai_round_trip(rgb):
        h, w = rgb.shape[:2]
        x = torch.nn.functional.pad(tensor(rgb), (0, -w % 64, 0, -h % 64))
        with torch.no_grad():
            _, encode_s, _ = timed(lambda: (net.compress(x), sync()), repeats)
            out = net.compress(x)
            _, decode_s, _ = timed(lambda: (net.decompress(out["strings"], out["shape"]), sync()),
                                   repeats)
        return encode_s, decode_s

    compressai_round_trip(images[0][1][:64, :64])        # warm-up
    rows = {"vaecodec_encode": [], "vaecodec_decode": [], "compressai_encode": [],
            "compressai_decode": []}
    for _, rgb in images:
        data, encode_s, _ = timed(lambda: compress(rgb, device=device), repeats)
        _, decode_s, _ = timed(lambda: decompress(data, device=device), repeats)
        rows["vaecodec_encode"].append(encode_s)
        rows["vaecodec_decode"].append(decode_s)
        encode_s, decode_s = compressai_round_trip(rgb)
        rows["compressai_encode"].append(encode_s)
        rows["compressai_decode"].append(decode_s)
    result = {k: statistics.median(v) for k, v in rows.items()}
    result["encode_ratio"] = result["compressai_encode"] / result["vaecodec_encode"]
    result["decode_ratio"] = result["compressai_decode"] / result["vaecodec_decode"]
    result["widths"] = {"N": config.N, "M": config.M}
    return result


def large_image_speed(images, device: str) -> dict:
    """Seconds to compress and decompress one 3840 x 2160 image (Kodak tiles), quality 4."""
    from . import compress, decompress

    rgb = np.tile(images[0][1], (5, 5, 1))[:2160, :3840]
    start = time.perf_counter()
    data = compress(rgb, device=device)
    middle = time.perf_counter()
    decompress(data, device=device)
    end = time.perf_counter()
    return {"pixels": "3840x2160", "encode_s": middle - start, "decode_s": end - middle}


def compressai_layout(codec: str, description: str, rows: list[dict]) -> dict:
    """A results record in CompressAI's layout, which existing plotting tools read."""
    return {"name": codec, "description": description, "results": {
        "bpp": [r["bpp"] for r in rows], "psnr-rgb": [r["psnr"] for r in rows],
        "ms-ssim": [r["ms_ssim"] for r in rows],
        "encoding_time": [r["encode_s"] for r in rows],
        "decoding_time": [r["decode_s"] for r in rows]}}


def plot(summary: dict, references: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    palette = plt.get_cmap("tab20").colors
    names = [n for n in summary if n != "vaecodec"] + list(references)
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    colors["vaecodec"] = "black"
    for name, ref in references.items():
        left.plot(ref["bpp"], ref["psnr"], "--", color=colors[name], linewidth=1,
                  label=f"{name} (published)")
        if ref["ms_ssim"]:
            right.plot(ref["bpp"], [ms_ssim_db(v) for v in ref["ms_ssim"]], "--",
                       color=colors[name], linewidth=1)
    for name, rows in summary.items():
        style = "o-" if name == "vaecodec" else ".-"
        width = 2.5 if name == "vaecodec" else 1.2
        left.plot([r["bpp"] for r in rows], [r["psnr"] for r in rows], style, linewidth=width,
                  color=colors[name], label=name)
        right.plot([r["bpp"] for r in rows], [ms_ssim_db(r["ms_ssim"]) for r in rows], style,
                   color=colors[name], linewidth=width)
    for axis, ylabel in ((left, "PSNR (dB, RGB)"), (right, "MS-SSIM (dB)")):
        axis.set_xlabel("bits per pixel")
        axis.set_ylabel(ylabel)
        axis.set_xlim(0, 2.5)
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(summary, bd_rows, speed, large, note, command) -> str:
    lines = ["# Benchmark results", "", f"Command: `{command}`", "", f"Machine: {note}", ""]
    lines += ["## Rate and distortion (means over images)", "",
              "| codec | setting | bpp | PSNR dB | MS-SSIM | MS-SSIM dB | encode ms | decode ms | peak MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for codec, rows in summary.items():
        for r in rows:
            lines.append(f"| {codec} | {r['setting']:g} | {r['bpp']:.4f} | {r['psnr']:.2f} | "
                         f"{r['ms_ssim']:.4f} | {ms_ssim_db(r['ms_ssim']):.2f} | "
                         f"{1000 * r['encode_s']:.0f} | {1000 * r['decode_s']:.0f} | "
                         f"{r['peak_mb']:.0f} |")
    lines += ["", "## BD-rate of vaecodec (negative: vaecodec needs fewer bits)", "",
              "Bjøntegaard delta rate, cubic polynomial fit of log-rate against quality "
              "(VCEG-M33), over the overlapping quality range.", "",
              "| against | source | BD-rate (PSNR) | BD-rate (MS-SSIM dB) |", "|---|---|---:|---:|"]

    def percent(value: float | None) -> str:
        # A published curve without MS-SSIM, or one too short to fit, has no BD-rate to show.
        return "n/a" if value is None or not math.isfinite(value) else f"{value:+.1f}%"

    for row in bd_rows:
        lines.append(f"| {row['against']} | {row['source']} | {percent(row['bd_rate_psnr'])} | "
                     f"{percent(row.get('bd_rate_ms_ssim'))} |")
    if speed:
        lines += ["", "## Speed against CompressAI (same architecture and widths, same run)", "",
                  f"Mean-scale hyperprior N={speed['widths']['N']}, M={speed['widths']['M']}; "
                  "median seconds per image at quality 4.", "",
                  "| | vaecodec | CompressAI | CompressAI / vaecodec |", "|---|---:|---:|---:|",
                  f"| encode | {speed['vaecodec_encode']:.3f} | {speed['compressai_encode']:.3f} | "
                  f"{speed['encode_ratio']:.2f} |",
                  f"| decode | {speed['vaecodec_decode']:.3f} | {speed['compressai_decode']:.3f} | "
                  f"{speed['decode_ratio']:.2f} |"]
    if large:
        lines += ["", f"A {large['pixels']} image: encode {large['encode_s']:.1f} s, "
                  f"decode {large['decode_s']:.1f} s."]
    return "\n".join(lines) + "\n"


def run(images_dir: Path = DEFAULT_IMAGES, codecs: list[str] | None = None,
        qualities=VAECODEC_QUALITIES, device: str = "cpu", out: Path = Path("bench-out"),
        quick: bool = False, threads: int | None = None, repeats: int | None = None,
        command: str = "vaecodec bench") -> dict:
    """Run the benchmark and write results.json, results.md, rd.png and per-codec JSON files
    (CompressAI's layout) into `out`. Returns the results record."""
    from tqdm import tqdm

    from .classical import available_codecs

    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_images(images_dir, 2 if quick else None)
    if not images:
        from .errors import InputError

        raise InputError(f"{images_dir}: no images to benchmark")
    repeats = repeats or (1 if quick else 3)
    classical = available_codecs()
    wanted = codecs or ["vaecodec", *classical]
    unknown = [c for c in wanted if c != "vaecodec" and c not in classical]
    if unknown:
        from .errors import InputError

        raise InputError(f"unknown or unavailable codecs: {', '.join(unknown)} "
                         f"(available: vaecodec, {', '.join(classical)})")
    if quick:
        qualities = [q for q in qualities if q in (2, 5, 8)] or list(qualities)[:2]
    jobs = len(images) * (len(qualities) * ("vaecodec" in wanted) + sum(
        len(classical[c].quick_settings if quick else classical[c].settings)
        for c in wanted if c != "vaecodec"))
    measurements: list[Measurement] = []
    with tqdm(total=jobs, unit="encode", desc="benchmark") as progress:
        if "vaecodec" in wanted:
            measurements += measure_vaecodec(images, qualities, out, device, repeats, progress)
        for name in wanted:
            if name != "vaecodec":
                codec = classical[name]
                settings = codec.quick_settings if quick else codec.settings
                measurements += measure_classical(codec, settings, images, repeats, progress)
    summary = summarize(measurements)
    references = load_references()
    bd_rows = bd_rates(summary, references)
    speed = None if quick or "vaecodec" not in wanted else speed_against_compressai(
        images[:4], device, repeats)
    large = None if quick or "vaecodec" not in wanted else large_image_speed(images, device)
    note = machine_note(device)
    descriptions = {name: classical[name].description for name in classical}
    descriptions["vaecodec"] = "vaecodec, shipped weights, real file sizes"
    for codec, rows in summary.items():
        (out / f"{codec}.json").write_text(json.dumps(
            compressai_layout(codec, descriptions[codec], rows), indent=1))
    record = {"machine": note, "device": device, "images": [n for n, _ in images],
              "summary": summary, "bd_rates": bd_rows, "speed_vs_compressai": speed,
              "large_image": large, "per_image": [asdict(m) for m in measurements],
              "command": command}
    (out / "results.json").write_text(json.dumps(record, indent=1))
    (out / "results.md").write_text(markdown(summary, bd_rows, speed, large, note, command))
    plot(summary, references, out / "rd.png")
    return record
