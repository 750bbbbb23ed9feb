"""Exact entropy coding of integer symbols with constriction's range coder.

Every probability the coder sees comes from integer frequency tables stored with the model, so
the encoder and any decoder build bit-identical models. No floating-point network output reaches
this module: callers pass integer symbols and integer table indices only.

A table covers the values `low .. low + len(freqs) - 2`; its last entry is an escape symbol. A
value outside the covered range codes the escape, and the value itself follows later in the
stream under a uniform model over 16 bits (ESCAPE_RANGE), so any 16-bit value can be coded.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .errors import FormatError

FREQUENCY_BITS = 20       # resolution of the stored tables
ESCAPE_BITS = 16
VALUE_MIN = -(1 << (ESCAPE_BITS - 1))
VALUE_MAX = (1 << (ESCAPE_BITS - 1)) - 1
GAUSSIAN_TAIL = 6.0       # a Gaussian table spans +-6 scales; beyond that, escapes


@dataclass(frozen=True)
class TableSet:
    """Integer frequency tables, concatenated: table k is freqs[starts[k]:starts[k+1]] and its
    first entry is the value lows[k]."""

    freqs: np.ndarray     # int64, all > 0
    starts: np.ndarray    # int64, len = tables + 1
    lows: np.ndarray      # int64

    def __len__(self) -> int:
        return len(self.lows)

    def table(self, k: int) -> np.ndarray:
        return self.freqs[self.starts[k]:self.starts[k + 1]]

    def totals(self) -> np.ndarray:
        """Per table, the sum of its frequencies (float64)."""
        return np.add.reduceat(self.freqs, self.starts[:-1]).astype(np.float64)

    def least_bits(self) -> np.ndarray:
        """Per table, the fewest bits any symbol can cost: -log2 of its largest probability."""
        return -np.log2(np.maximum.reduceat(self.freqs, self.starts[:-1]) / self.totals())

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_freqs": self.freqs.astype(np.int32),
                f"{prefix}_starts": self.starts.astype(np.int64),
                f"{prefix}_lows": self.lows.astype(np.int32)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "TableSet":
        return cls(np.asarray(arrays[f"{prefix}_freqs"], np.int64),
                   np.asarray(arrays[f"{prefix}_starts"], np.int64),
                   np.asarray(arrays[f"{prefix}_lows"], np.int64))

    @classmethod
    def from_probabilities(cls, tables: list[tuple[int, np.ndarray]]) -> "TableSet":
        """Build from (low, probabilities) pairs; each probability list ends with the escape's."""
        freqs, starts, lows = [], [0], []
        for low, probabilities in tables:
            quantized = np.maximum(1, np.round(np.asarray(probabilities) * (1 << FREQUENCY_BITS)))
            freqs.append(quantized.astype(np.int64))
            starts.append(starts[-1] + len(quantized))
            lows.append(low)
        return cls(np.concatenate(freqs), np.array(starts), np.array(lows))


def gaussian_tables(scales: np.ndarray) -> TableSet:
    """Tables of zero-mean Gaussians of the given scales, integrated over unit bins.

    Called only when weights are exported: the tables are then stored with the weights, so
    decoding never depends on this machine's erf.
    """
    tables = []
    for scale in scales:
        radius = max(1, math.ceil(GAUSSIAN_TAIL * scale))
        edges = np.arange(-radius, radius + 2) - 0.5
        cdf = np.array([0.5 * math.erfc(-e / (scale * math.sqrt(2))) for e in edges])
        inside = np.diff(cdf)
        escape = max(0.0, 1.0 - inside.sum())
        tables.append((-radius, np.append(inside, escape)))
    return TableSet.from_probabilities(tables)


def _categorical(freqs: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(freqs.astype(np.float64), perfect=False)


def _escape_model():
    import constriction

    return constriction.stream.model.Uniform(1 << ESCAPE_BITS)


def _byte_model():
    import constriction

    return constriction.stream.model.Uniform(256)


def _groups(table_index: np.ndarray, count: int):
    """(table, positions using it) for each of `count` tables that is used, in table order: the
    order in which both `encode` and `decode` visit the symbols."""
    order = np.argsort(table_index, kind="stable")
    boundaries = np.searchsorted(table_index[order], np.arange(count + 1))
    for k in range(count):
        positions = order[boundaries[k]:boundaries[k + 1]]
        if positions.size:
            yield k, positions


class StreamEncoder:
    """A range-coded stream written in batches: each batch's escaped values follow that batch,
    so a `StreamDecoder` can take the batches back one at a time and choose the next batch's
    tables from the values it already holds. One batch makes the stream of `encode`."""

    def __init__(self):
        import constriction

        self._coder = constriction.stream.queue.RangeEncoder()

    def add(self, values: np.ndarray, table_index: np.ndarray, tables: TableSet) -> None:
        """Code integer `values` (each within VALUE_MIN..VALUE_MAX), each under the table that
        `table_index` names at the same position. Symbols are grouped by table."""
        values = np.asarray(values, np.int64).ravel()
        table_index = np.asarray(table_index, np.int64).ravel()
        if values.size and (values.min() < VALUE_MIN or values.max() > VALUE_MAX):
            raise ValueError("values out of the codable range")
        escaped = []
        for k, positions in _groups(table_index, len(tables)):
            group = values[positions]
            freqs = tables.table(k)
            symbols = group - tables.lows[k]
            escape = len(freqs) - 1
            outside = (symbols < 0) | (symbols >= escape)
            if outside.any():
                escaped.append(group[outside])
                symbols = np.where(outside, escape, symbols)
            self._coder.encode(symbols.astype(np.int32), _categorical(freqs))
        if escaped:
            self._coder.encode((np.concatenate(escaped) - VALUE_MIN).astype(np.int32),
                               _escape_model())

    def add_bytes(self, data: bytes) -> None:
        """Code bytes as they are, 8 bits each."""
        if data:
            self._coder.encode(np.frombuffer(data, np.uint8).astype(np.int32), _byte_model())

    def finish(self) -> bytes:
        return self._coder.get_compressed().astype("<u4").tobytes()


@contextmanager
def _decoding_errors():
    """Turn whatever constriction raises on invalid data (it signals it by several exception
    types) into one FormatError."""
    try:
        yield
    except Exception as error:
        raise FormatError(f"corrupt .vae file (entropy decoding failed: {error})") from None


class StreamDecoder:
    """Reads back what a `StreamEncoder` wrote, batch by batch, with the same tables. Raises
    FormatError where the data cannot be decoded."""

    def __init__(self, data: bytes):
        import constriction

        if len(data) % 4:
            raise FormatError("corrupt .vae file (entropy-coded section length)")
        self._coder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").copy())

    def take(self, table_index: np.ndarray, tables: TableSet) -> np.ndarray:
        """The values of one batch, in the order of `table_index`, as int64."""
        table_index = np.asarray(table_index, np.int64).ravel()
        values = np.empty(table_index.size, np.int64)
        with _decoding_errors():
            escape_positions = []
            for k, positions in _groups(table_index, len(tables)):
                freqs = tables.table(k)
                symbols = np.asarray(self._coder.decode(_categorical(freqs), positions.size),
                                     np.int64)
                escape = len(freqs) - 1
                values[positions] = symbols + tables.lows[k]
                if (symbols == escape).any():
                    escape_positions.append(positions[symbols == escape])
            if escape_positions:
                positions = np.concatenate(escape_positions)
                escaped = np.asarray(self._coder.decode(_escape_model(), positions.size), np.int64)
                values[positions] = escaped + VALUE_MIN
        return values

    def take_bytes(self, count: int) -> bytes:
        """`count` bytes coded by `StreamEncoder.add_bytes`."""
        if not count:
            return b""
        with _decoding_errors():
            return np.asarray(self._coder.decode(_byte_model(), count), np.uint8).tobytes()


def encode(values: np.ndarray, table_index: np.ndarray, tables: TableSet) -> bytes:
    """Code integer `values` (each within VALUE_MIN..VALUE_MAX), each under the table that
    `table_index` names at the same position, into one stream."""
    stream = StreamEncoder()
    stream.add(values, table_index, tables)
    return stream.finish()


def decode(data: bytes, table_index: np.ndarray, tables: TableSet) -> np.ndarray:
    """Inverse of `encode`: the values, in the order of `table_index`, as int64."""
    stream = StreamDecoder(data)
    table_index = np.asarray(table_index, np.int64).ravel()
    # No stream can code these symbols in fewer bits than this (the margin covers the coder's
    # own rounding of the tables), so a file claiming a huge image with a short section is
    # refused before anything of the image's size is allocated.
    fewest = np.bincount(table_index, minlength=len(tables)) @ tables.least_bits()
    if 8 * len(data) < 0.9 * fewest - 64:
        raise FormatError(f"corrupt .vae file ({len(data)} bytes cannot hold "
                          f"{table_index.size} symbols; the image size is wrong)")
    return stream.take(table_index, tables)


def symbol_bits(values: np.ndarray, table_index: np.ndarray, tables: TableSet) -> np.ndarray:
    """The information content in bits of each value under its table (an escaped value costs
    the escape symbol plus ESCAPE_BITS)."""
    values = np.asarray(values, np.int64).ravel()
    table_index = np.asarray(table_index, np.int64).ravel()
    totals = tables.totals()
    sizes = np.diff(tables.starts)
    symbols = values - tables.lows[table_index]
    escape = sizes[table_index] - 1
    outside = (symbols < 0) | (symbols >= escape)
    symbols = np.where(outside, escape, symbols)
    freqs = tables.freqs[tables.starts[table_index] + symbols]
    return -np.log2(freqs / totals[table_index]) + ESCAPE_BITS * outside


def estimate_bits(values: np.ndarray, table_index: np.ndarray, tables: TableSet) -> float:
    """The information content, in bits, of `values` under the tables (what `encode` should
    produce up to the coder's small overhead)."""
    return float(symbol_bits(values, table_index, tables).sum())
