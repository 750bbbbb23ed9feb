"""A quick benchmark run on two small images writes every report."""

import json

from PIL import Image

from vaecodec import benchmark


def test_quick_benchmark_writes_all_reports(tmp_path, kodim23):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(kodim23[:192, :256]).save(images / "a.png")
    Image.fromarray(kodim23[200:392, 300:556]).save(images / "b.png")
    out = tmp_path / "out"
    record = benchmark.run(images_dir=images, codecs=["vaecodec", "jpeg420", "webp"], out=out,
                           quick=True)
    assert set(record["summary"]) == {"vaecodec", "jpeg420", "webp"}
    assert len(record["per_image"]) == 2 * (3 + 3 + 3)
    # bpp is counted from the files on disk
    for m in record["per_image"]:
        if m["codec"] == "vaecodec":
            path = out / "vae" / f"{m['image']}-q{m['setting']:g}.vae"
            assert m["bpp"] == 8 * path.stat().st_size / (192 * 256)
    layout = json.loads((out / "vaecodec.json").read_text())
    assert set(layout["results"]) == {"bpp", "psnr-rgb", "ms-ssim", "encoding_time",
                                      "decoding_time"}
    assert (out / "rd.png").stat().st_size > 0
    assert "BD-rate" in (out / "results.md").read_text()
    against = {row["against"] for row in record["bd_rates"]}
    assert {"jpeg420", "webp", "compressai-mbt2018-mean_mse_cpu"} <= against


def test_a_curve_without_ms_ssim_shows_no_number_for_it():
    summary = {"vaecodec": [{"setting": 1, "bpp": 0.2, "psnr": 28.0, "ms_ssim": 0.95,
                             "encode_s": 0.1, "decode_s": 0.1, "peak_mb": 10.0}]}
    rows = [{"against": "published-psnr-only", "source": "published (x)", "bd_rate_psnr": -3.0}]
    table = benchmark.markdown(summary, rows, None, None, "a note", "a command")
    assert "| published-psnr-only | published (x) | -3.0% | n/a |" in table
    assert "nan" not in table
