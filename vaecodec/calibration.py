"""Measured entropy-coding tables: a weights file's tables refitted to the symbols that the codec
actually produces on photos.

Export writes the tables that training assumed: for y, Gaussians integrated over unit bins, one
per scale index; for z, the factorized prior, one density per channel shared by every quality.
The symbols follow them only roughly. A residual round(y - mean) at a given scale index is not
quite a binned Gaussian, and z's distribution changes with the quality, which one shared
density can only average (session 50, msh96s on held-out photos: tables measured on training photos code
y in 0.5-0.8% fewer bits at every quality, and z in 9% fewer at quality 0 and 12% at 8).

`calibrate` codes photos at the integer qualities 0..8 exactly as `compress` does, counts every
symbol in the cell of the table that coded it, and writes a new weights file whose tables are
those counts smoothed towards the model's own tables (SMOOTHING symbols' worth of them, so that
no value goes without a probability): one set of y tables as before, and one set of z tables
per integer quality (`ModelBundle.z_table_level`). The networks, and so every decoded image,
stay exactly as they were; only the rate changes. The tables' supports and escapes stay too, so
the decoder's checks on them hold unchanged.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from .entropy_coding import TableSet
from .errors import InputError

QUALITIES = tuple(range(9))   # one set of z tables per integer quality
SMOOTHING = 100               # pseudo-counts of the model's own table in each measured table
PHOTO_SIZE = 512              # photos are shrunk to at most this many pixels a side


def cell_counts(values: np.ndarray, table_index: np.ndarray, tables: TableSet) -> np.ndarray:
    """How often each entry of `tables.freqs` codes one of `values` (a value outside its
    table's range counts as that table's escape)."""
    values = np.asarray(values, np.int64).ravel()
    table_index = np.asarray(table_index, np.int64).ravel()
    sizes = np.diff(tables.starts)[table_index]
    symbols = values - tables.lows[table_index]
    symbols = np.where((symbols < 0) | (symbols >= sizes - 1), sizes - 1, symbols)
    return np.bincount(tables.starts[table_index] + symbols, minlength=len(tables.freqs))


@lru_cache(maxsize=1)
def _bundle(weights: str):
    """The weights file, loaded once per process rather than once per photo."""
    from .weights import load_file

    return load_file(weights)


def photo_counts(job: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """One photo's counts: y's over the y tables, and z's over the first set of z tables, per
    quality (len(QUALITIES), len of that set's freqs)."""
    from . import codec

    weights, photo = job
    bundle = _bundle(weights)
    transforms = codec.NumpyTransforms(bundle, np.float32)
    image = Image.open(photo).convert("RGB")
    image.thumbnail((PHOTO_SIZE, PHOTO_SIZE))
    rgb = np.asarray(image)
    z_base = table_run(bundle.z_tables, 0, bundle.config.H)
    y_counts = np.zeros(len(bundle.y_tables.freqs), np.int64)
    z_counts = np.zeros((len(QUALITIES), len(z_base.freqs)), np.int64)
    for n, quality in enumerate(QUALITIES):
        coded = codec.encode_latents(bundle, rgb, float(quality), transforms)
        # the zeros of latents that only the padding depends on would skew the tables
        seen = ~codec.unseen_latents(*rgb.shape[:2], coded.residual.shape)
        y_counts += cell_counts(coded.residual[0][:, seen], coded.scale_index[0][:, seen],
                                bundle.y_tables)
        # every quality's z counted against the first set: the sets share their supports
        z_counts[n] = cell_counts(coded.z, codec.z_table_index(bundle, coded.z.shape, 0.0),
                                  z_base)
    return y_counts, z_counts


def table_run(tables: TableSet, first: int, count: int) -> TableSet:
    """`count` tables of a set, from table `first` on (in a calibrated file, the z tables of
    one quality; every quality's have the same supports)."""
    start, end = tables.starts[first], tables.starts[first + count]
    return TableSet(tables.freqs[start:end], tables.starts[first:first + count + 1] - start,
                    tables.lows[first:first + count])


def measured(tables: TableSet, counts: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(low, probabilities) per table: `counts` (laid out as `tables.freqs`) smoothed towards
    the tables' own probabilities."""
    out = []
    for k in range(len(tables)):
        cells = slice(tables.starts[k], tables.starts[k + 1])
        prior = tables.freqs[cells] / tables.freqs[cells].sum()
        seen = counts[cells].astype(np.float64)
        out.append((int(tables.lows[k]), (seen + SMOOTHING * prior) / (seen.sum() + SMOOTHING)))
    return out


def calibrate(weights: str | Path, photos: list[Path], out: str | Path, workers: int = 1) -> Path:
    """Write to `out` the weights file `weights` with tables measured on `photos` (never on
    the images it will be judged on); InputError if there is nothing to measure or the
    weights cannot be read. A file calibrated before is measured afresh, each table
    smoothed towards the one it replaces."""
    from .weights import load_file

    if not photos:
        raise InputError("no photos to measure the tables on")
    try:
        bundle = load_file(weights)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"cannot read weights file {weights}: {error}") from None
    jobs = [(str(weights), str(photo)) for photo in photos]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(photo_counts, jobs))
    else:
        results = [photo_counts(job) for job in jobs]
    y_counts = sum(r[0] for r in results)
    z_counts = sum(r[1] for r in results)
    channels = bundle.config.H
    y_tables = TableSet.from_probabilities(measured(bundle.y_tables, y_counts))
    # each quality's counts smoothed towards the tables that coded that quality so far
    z_tables = TableSet.from_probabilities([
        table for n, quality in enumerate(QUALITIES)
        for table in measured(table_run(bundle.z_tables,
                                        bundle.z_table_level(quality) * channels, channels),
                              z_counts[n])])

    with np.load(weights, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta["z_table_levels"] = len(QUALITIES)
    meta["calibration"] = {"photos": len(photos), "photo_size": PHOTO_SIZE,
                           "smoothing": SMOOTHING, "qualities": list(QUALITIES)}
    arrays.update(y_tables.to_arrays("y"))
    arrays.update(z_tables.to_arrays("z"))
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")    # never a half-written weights file
    partial.write_bytes(buffer.getvalue())
    partial.replace(out)
    return out
