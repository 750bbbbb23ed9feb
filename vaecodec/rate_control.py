"""Rate control: the quality that meets a target file size, bpp or PSNR.

For a model without per-quality modulation the analysis transform does not depend on the
quality (the gain comes after it), so it runs once; each probe of the search only redoes the
gain, the hyper networks and the entropy coder (and, for a PSNR target, the synthesis). A
modulated model's analysis depends on the quality, so each of its probes reruns it too. Qualities are searched on the file format's grid of
hundredths; file size and PSNR grow with quality, so the search keeps a bracket and probes
by interpolation, falling back to bisection when interpolation stalls.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .architecture import LOWEST_QUALITY, MAX_QUALITY
from .errors import InputError

SIZE_WITHIN = 0.03      # a size target is met once the file is within 3% below it
PSNR_WITHIN = 0.05      # a PSNR target is met once the file is within 0.05 dB above it
LOWEST, HIGHEST = round(100 * LOWEST_QUALITY), round(100 * MAX_QUALITY)   # in hundredths


def parse_size(text) -> int:
    """Bytes from 40000, "40000", "40KB", "1.5MB" (KB and MB are powers of 1024)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)[bB]?\s*", str(text))
        if not match:
            raise InputError(f"cannot read a size from {text!r} (examples: 40000, 40KB, 1.5MB)")
        value = float(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2}[match.group(2).lower()]
    if not value > 0 or not math.isfinite(value):
        raise InputError(f"a target size must be positive, not {text!r}")
    return int(value)


@dataclass(frozen=True)
class Targets:
    """At most one of: a largest file size in bytes, or a smallest PSNR in dB."""

    max_bytes: int | None = None
    min_psnr: float | None = None

    @classmethod
    def parse(cls, size, bpp, psnr, pixels: int) -> "Targets | None":
        given = [t for t in (size, bpp, psnr) if t is not None]
        if not given:
            return None
        if len(given) > 1:
            raise InputError("give one target at most: a size, a bpp or a PSNR")
        if size is not None:
            return cls(max_bytes=parse_size(size))
        if bpp is not None:
            try:
                bpp = float(bpp)
            except (TypeError, ValueError):
                raise InputError(f"a target bpp must be a number, not {bpp!r}") from None
            if not bpp > 0 or not math.isfinite(bpp):
                raise InputError(f"a target bpp must be positive, not {bpp}")
            return cls(max_bytes=int(bpp * pixels / 8))
        try:
            psnr = float(psnr)
        except (TypeError, ValueError):
            raise InputError(f"a target PSNR must be a number, not {psnr!r}") from None
        if not math.isfinite(psnr):
            raise InputError("a target PSNR must be finite")
        return cls(min_psnr=psnr)


def search(encode, psnr_of, targets: Targets) -> bytes:
    """The file at the best quality that meets `targets`: the largest quality whose file fits
    `max_bytes`, or the smallest whose PSNR reaches `min_psnr`. `encode(q)` returns
    (file bytes, coded symbols); `psnr_of(coded, q)` the PSNR of their decoding."""
    probes: dict[int, tuple[bytes, float]] = {}

    def probe(grid: int) -> float:
        if grid not in probes:
            data, coded = encode(grid / 100)
            value = len(data) if targets.max_bytes is not None else psnr_of(coded, grid / 100)
            probes[grid] = (data, value)
        return probes[grid][1]

    if targets.max_bytes is not None:
        goal = float(targets.max_bytes)
        fits = lambda g: probe(g) <= goal          # noqa: E731
        close = lambda g: probe(g) >= goal * (1 - SIZE_WITHIN)   # noqa: E731
        # Log-size is close to linear in quality; aim at the middle of the accepted window.
        distance = lambda g: math.log(probe(g)) - math.log(goal * (1 - SIZE_WITHIN / 2))  # noqa: E731
        if not fits(LOWEST):
            raise InputError(f"target of {targets.max_bytes} bytes is below the smallest file "
                             f"this image can have ({int(probe(LOWEST))} bytes at quality "
                             f"{LOWEST / 100:g})")
        if fits(HIGHEST):
            return probes[HIGHEST][0]
        good, bad = LOWEST, HIGHEST
    else:
        goal = targets.min_psnr
        fits = lambda g: probe(g) >= goal          # noqa: E731
        close = lambda g: probe(g) <= goal + PSNR_WITHIN   # noqa: E731
        distance = lambda g: probe(g) - (goal + PSNR_WITHIN / 2)   # noqa: E731
        if not fits(HIGHEST):
            raise InputError(f"target of {goal} dB is above what this image reaches "
                             f"({probe(HIGHEST):.2f} dB at quality {HIGHEST / 100:g})")
        if fits(LOWEST):
            return probes[LOWEST][0]
        good, bad = HIGHEST, LOWEST
    # Invariant: `good` meets the target, `bad` does not; the answer lies between them. Each
    # guess is where the line through the two ends crosses the aim (regula falsi); when the same
    # end moves twice in a row, the other end's weight is halved (the Illinois variant), which
    # keeps the bracket shrinking from both sides.
    at_good, at_bad = distance(good), distance(bad)
    last_moved = None
    while abs(good - bad) > 1 and not close(good):
        share = at_bad / (at_bad - at_good) if at_bad != at_good else 0.5
        guess = bad + round((good - bad) * min(max(share, 0.0), 1.0))
        guess = min(max(guess, min(good, bad) + 1), max(good, bad) - 1)
        if fits(guess):
            good, at_good = guess, distance(guess)
            if last_moved == "good":
                at_bad /= 2
            last_moved = "good"
        else:
            bad, at_bad = guess, distance(guess)
            if last_moved == "bad":
                at_good /= 2
            last_moved = "bad"
    return probes[good][0]
