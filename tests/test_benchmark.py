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
