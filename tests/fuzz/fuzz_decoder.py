"""Fuzzing campaign for the decoder and `info`: mutated, truncated, spliced and random files.

    python tests/fuzz/fuzz_decoder.py --inputs 100000 [--seed 1] [--workers 2] \
        [--json benchmarks/results/fuzz.json]

Inputs are derived from the seed files in `corpus/` by the mutations in `mutate`; most of
them get a correct checksum afterwards, so that they pass the header and reach the entropy
decoder. Every input goes through `vaecodec.info` and `vaecodec.decompress` in a worker
process with a memory cap; each must end in a `VaecodecError` with a one-line message, or in
an image of the size and mode its header states. Anything else (another exception, a
multi-line message, a hang past the time limit, a dead worker) is a failure, and the input is
saved to `failures/` for the test suite to replay. Input n of a run is a pure function of
(seed, n), so a campaign can be repeated exactly.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import random
import resource
import signal
import struct
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

CORPUS = HERE / "corpus"
FAILURES = HERE / "failures"
HEADER_SIZE = 54
TIME_LIMIT_S = 20          # per input; a seed file decodes in milliseconds
MEMORY_LIMIT = 4 << 30     # address space of a worker
INTERESTING_32 = (0, 1, 2, 63, 64, 65, 255, 4096, 16384, 16385, 65535, 1 << 24, 1 << 31,
                  (1 << 32) - 1)
INTERESTING_8 = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF)
OUTCOMES = ("decoded", "clean_error", "failure")
# How often each mutation in `mutate` is picked: mostly inside the payload, so that most
# inputs pass the header and exercise the entropy decoder and what follows it.
MUTATION_WEIGHTS = (1, 4, 4, 1, 1, 3, 2, 1, 3, 1, 4, 4)


def seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("*.vae"))]


def refresh_corpus() -> None:
    """Write the seed files: small images of every mode, with and without alpha and an ICC
    profile, at low and high quality, made by the shipped weights from a Kodak image."""
    import io

    import numpy as np
    from PIL import Image

    import vaecodec

    photo = np.asarray(Image.open(HERE.parents[1] / "data" / "kodak" / "kodim23.png"))
    stream = np.asarray(Image.open(HERE.parents[1] / "data" / "kodak" / "kodim13.png"))
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*.vae"):
        old.unlink()
    icc = Image.open(io.BytesIO(_srgb_png())).info.get("icc_profile")
    cases = {
        "rgb-64x64-q1": (Image.fromarray(photo[:64, :64]), 1, None),
        "rgb-64x64-q8": (Image.fromarray(photo[64:128, 64:128]), 8, None),
        "rgb-64x64-q0": (Image.fromarray(photo[:64, 64:128]), 0, None),    # format version 3
        "rgb-1x1": (Image.fromarray(photo[:1, :1]), 4, None),
        "rgb-130x20": (Image.fromarray(photo[200:220, 300:430]), 3, None),
        "grey-100x37": (Image.fromarray(photo[300:337, 100:200]).convert("L"), 5, None),
        "rgba-48x80": (Image.fromarray(np.dstack([photo[:80, :48], photo[:80, :48, 0]])), 6, None),
        "la-33x33": (Image.fromarray(photo[:33, :33]).convert("LA"), 2, None),
        "icc-70x70": (Image.fromarray(photo[100:170, 100:170]), 4.5, icc),
        # Large and detailed enough that the post-filter pays for its bytes.
        "filter-256x192": (Image.fromarray(photo[150:342, 250:506]), 8, None),
        # Fine texture (Kodak's mountain stream), where corrections pay: format version 5.
        "correction-256x192": (Image.fromarray(stream[100:292, 200:456]), 8, None),
    }
    for name, (image, quality, profile) in cases.items():
        if profile:
            image.info["icc_profile"] = profile
        data = vaecodec.compress(image, quality=quality)
        if name.startswith("filter") and not vaecodec.info(data)["filter_bytes"]:
            raise RuntimeError(f"seed {name} has no post-filter section")
        if name.startswith("correction") and not vaecodec.info(data)["correction_bytes"]:
            raise RuntimeError(f"seed {name} has no correction section")
        (CORPUS / f"{name}.vae").write_bytes(data)
    # Version 4's pixel corrections, which only session 52's encoder wrote: its compat file.
    version4 = HERE.parent / "compat" / "msh96t-kodim13-crop-q8-corrected.vae"
    (CORPUS / "correction-v4-128x96.vae").write_bytes(version4.read_bytes())


def _srgb_png() -> bytes:
    import io

    from PIL import Image, ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG", icc_profile=profile)
    return buffer.getvalue()


def fix_checksum(data: bytearray) -> None:
    if len(data) >= HEADER_SIZE:
        crc = zlib.crc32(bytes(data[HEADER_SIZE:]), zlib.crc32(bytes(data[:HEADER_SIZE - 4])))
        struct.pack_into("<I", data, HEADER_SIZE - 4, crc)


def section_span(data: bytes, rng: random.Random) -> tuple[int, int]:
    """A random section's byte range (the whole payload if the header is unreadable)."""
    if len(data) < HEADER_SIZE:
        return 0, len(data)
    lengths = section_lengths(data)
    start = HEADER_SIZE
    spans = []
    for length in lengths:
        spans.append((start, min(len(data), start + length)))
        start += length
    spans = [s for s in spans if s[1] > s[0]] or [(HEADER_SIZE, len(data))]
    return rng.choice(spans)


def resize_section(out: bytearray, position: int, delta: int) -> None:
    """Keep the header's section lengths true after `delta` bytes were inserted (or removed,
    if negative) at `position`, so that the input still passes the header checks."""
    if len(out) < HEADER_SIZE or position < HEADER_SIZE:
        return
    lengths = section_lengths(out)
    start = HEADER_SIZE
    for i, length in enumerate(lengths):
        if position <= start + length or i == len(lengths) - 1:
            lengths[i] = min(max(0, length + delta), 0xFFFFFFFF if i < 4 else 0xFF)
            break
        start += length
    struct.pack_into("<4I", out, 34, *lengths[:4])
    out[7] = lengths[4]


def section_lengths(data: bytes) -> list[int]:
    """The header's section lengths: z, y, alpha and icc, then the post-filter's (byte 7),
    then, with the correction flag (byte 6, bit 0), the correction's: the rest of the file."""
    lengths = [*struct.unpack_from("<4I", data, 34), data[7]]
    if data[6] & 1:
        lengths.append(max(0, len(data) - HEADER_SIZE - sum(lengths)))
    return lengths


def mutate(data: bytes, others: list[bytes], rng: random.Random) -> bytes:
    """One fuzz input from a seed file: 1-3 random mutations, then (usually) a valid CRC."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choices(range(12), weights=MUTATION_WEIGHTS)[0]
        if kind in (10, 11):                                # bytes of a section, any value
            lo, hi = section_span(bytes(out), rng)
            for _ in range(rng.randint(1, 3)) if hi > lo else ():
                out[rng.randrange(lo, hi)] = rng.randrange(256)
        elif kind == 0 and out:                                # flip bits anywhere
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8)
        elif kind in (1, 2):                                # flip bits inside a section
            lo, hi = section_span(bytes(out), rng)
            if hi > lo:
                for _ in range(rng.randint(1, 4)):
                    out[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
        elif kind == 3 and out:                             # interesting byte values
            out[rng.randrange(len(out))] = rng.choice(INTERESTING_8)
        elif kind == 4 and len(out) >= HEADER_SIZE:         # a header field at a limit
            offset, fmt = rng.choice([(4, "B"), (5, "B"), (6, "B"), (24, "<H"), (26, "<I"),
                                      (30, "<I"), (34, "<I"), (38, "<I"), (42, "<I"),
                                      (46, "<I")])
            limit = {"B": 0xFF, "<H": 0xFFFF, "<I": 0xFFFFFFFF}[fmt]
            value = rng.choice([v for v in INTERESTING_32 if v <= limit] +
                               [rng.randrange(limit + 1)])
            struct.pack_into(fmt, out, offset, value)
        elif kind == 5:                                     # truncate
            i = rng.randrange(len(out) + 1)
            if rng.random() < 0.7:
                resize_section(out, i, i - len(out))
            del out[i:]
        elif kind == 6:                                     # append or insert garbage
            i = rng.randrange(len(out) + 1)
            extra = rng.randbytes(rng.choice((1, 4, 16, 256)))
            if rng.random() < 0.7:
                resize_section(out, i, len(extra))
            out[i:i] = extra
        elif kind == 7 and others:                          # splice with another file
            other = rng.choice(others)
            out = out[:rng.randrange(len(out) + 1)] + other[rng.randrange(len(other) + 1):]
        elif kind == 8 and len(out) > HEADER_SIZE:          # delete a run of payload bytes
            i = rng.randrange(HEADER_SIZE, len(out))
            removed = len(out[i:i + rng.choice((1, 4, 64))])
            if rng.random() < 0.7:
                resize_section(out, i + 1, -removed)
            del out[i:i + removed]
        elif kind == 9:                                     # random bytes, sometimes a header
            out = bytearray(rng.randbytes(rng.randrange(0, 200)))
            if rng.random() < 0.5:
                out[:min(len(out), HEADER_SIZE)] = data[:min(len(out), HEADER_SIZE)]
    if rng.random() < 0.9:
        fix_checksum(out)
    return bytes(out)


def make_input(seed: int, n: int, files: list[bytes]) -> bytes:
    rng = random.Random(f"{seed}:{n}")
    return mutate(rng.choice(files), files, rng)


def check(data: bytes) -> tuple[str, bool, str]:
    """(outcome, reached the entropy decoder, detail) for one input."""
    import numpy as np

    import vaecodec
    from vaecodec import format as vae_format
    from vaecodec.weights import load_model

    reached = False
    try:
        header, _ = vae_format.unpack(data)
        bundle = load_model(header.model_id)
        reached = bundle.weights_hash == header.weights_hash
    except vaecodec.VaecodecError:
        pass
    for step in ("info", "decompress"):
        try:
            result = getattr(vaecodec, step)(data)
        except vaecodec.VaecodecError as error:
            if "\n" in str(error) or not str(error):
                return "failure", reached, f"{step}: message not one line: {error!r}"
            return "clean_error", reached, ""
        except Exception as error:  # noqa: BLE001 - any other exception is the finding
            return "failure", reached, f"{step}: {type(error).__name__}: {error}"
        if step == "decompress":
            info = vaecodec.info(data)
            if result.size != (info["width"], info["height"]) or result.mode != info["mode"]:
                return "failure", reached, "decoded image disagrees with its header"
            np.asarray(result)
    return "decoded", reached, ""


def _alarm(number, frame):
    raise TimeoutError(f"no result within {TIME_LIMIT_S} s")


def worker(seed: int, start: int, stop: int, files: list[bytes], progress, results) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _alarm)
    counts = {(o, r): 0 for o in OUTCOMES for r in (False, True)}
    found = []
    for n in range(start, stop):
        progress.value = n
        data = make_input(seed, n, files)
        signal.alarm(TIME_LIMIT_S)
        try:
            outcome, reached, detail = check(data)
        except TimeoutError as error:
            outcome, reached, detail = "failure", True, f"hang: {error}"
        except MemoryError:
            outcome, reached, detail = "failure", True, "memory limit exceeded"
        signal.alarm(0)
        counts[outcome, reached] += 1
        if outcome == "failure":
            found.append((n, detail))
    results.put(({f"{o}|{r}": c for (o, r), c in counts.items()}, found))


def campaign(total: int, seed: int, workers: int) -> dict:
    files = seeds()
    FAILURES.mkdir(exist_ok=True)
    context = mp.get_context("fork")
    results = context.Queue()
    bounds = [total * i // workers for i in range(workers + 1)]
    started = time.time()
    jobs = []
    for i in range(workers):
        progress = context.Value("q", bounds[i])
        process = context.Process(target=worker, args=(seed, bounds[i], bounds[i + 1], files,
                                                       progress, results))
        process.start()
        jobs.append((process, progress))
    totals: dict[str, int] = {}
    failures = []
    reported = 0
    while reported < workers and any(p.is_alive() for p, _ in jobs) or not results.empty():
        try:
            counts, found = results.get(timeout=1)
        except queue.Empty:
            continue
        reported += 1
        failures.extend(found)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    for process, progress in jobs:
        process.join()
        if process.exitcode != 0:       # the worker died: the input it was on is a crash
            failures.append((progress.value, f"worker died with exit code {process.exitcode}"))
    for n, detail in failures:
        (FAILURES / f"{seed}-{n}.vae").write_bytes(make_input(seed, n, files))
    return {
        "inputs": total, "seed": seed, "seconds": round(time.time() - started, 1),
        "seed_files": len(files),
        "reached_entropy_decoder": sum(v for k, v in totals.items() if k.endswith("True")),
        "outcomes": {o: sum(v for k, v in totals.items() if k.startswith(o + "|"))
                     for o in OUTCOMES},
        "failures": [{"input": n, "detail": d} for n, d in failures],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--refresh-corpus", action="store_true",
                        help="rewrite the seed files (after new weights ship) and stop")
    args = parser.parse_args()
    if args.refresh_corpus:
        refresh_corpus()
        return
    report = campaign(args.inputs, args.seed, args.workers)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
