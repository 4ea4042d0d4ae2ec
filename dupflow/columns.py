"""Per-file columns costing bytes, not Python objects: strings as one Arrow array, read back as str."""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

__all__ = ["StringColumn", "combined", "fixed_bytes"]

BATCH = 65536  # values turned into Python objects at a time when iterating


class StringColumn(Sequence[str]):
    """A read-only sequence of strings kept as one Arrow string array (about the text's bytes plus 4 per
    value, where a list of str costs about 60 more each); indexing and iteration give str."""

    __slots__ = ("_values",)

    def __init__(self, values: pa.Array | pa.ChunkedArray | Iterable[str] = ()):
        if not isinstance(values, (pa.Array, pa.ChunkedArray)):
            values = pa.array(list(values), pa.string())
        if isinstance(values, pa.ChunkedArray):
            values = combined(values)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise TypeError(f"StringColumn holds strings, not {values.type}")
        self._values = values

    @property
    def arrow(self) -> pa.Array:
        """The values as an Arrow array (no copy)."""
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return StringColumn(pa.array(self.to_list()[index], self._values.type))
        k = int(index)
        if k < 0:
            k += len(self._values)
        if not 0 <= k < len(self._values):
            raise IndexError("StringColumn index out of range")
        return self._values[k].as_py()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self._values), BATCH):
            yield from self._values.slice(start, BATCH).to_pylist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringColumn):
            return self._values.equals(other._values)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # mutable-sequence semantics: equal to a list with the same strings

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self._values.slice(0, 3).to_pylist())
        return f"StringColumn([{head}{', ...' if len(self) > 3 else ''}], n={len(self)})"

    def to_list(self) -> list[str]:
        """The values as a list of str."""
        return self._values.to_pylist()

    def take(self, positions: np.ndarray | list[int]) -> StringColumn:
        """The values at these positions, in that order."""
        return StringColumn(self._values.take(pa.array(np.asarray(positions, dtype=np.int64))))


def combined(values: pa.ChunkedArray) -> pa.Array:
    """One array of a chunked one (large_string once the text passes 2 GiB, string's offset limit)."""
    if values.num_chunks == 0:
        return pa.array([], values.type)
    try:
        return values.combine_chunks()
    except pa.ArrowInvalid:
        return values.cast(pa.large_string()).combine_chunks()


def fixed_bytes(column: pa.Array | pa.ChunkedArray, width: int) -> np.ndarray:
    """A fixed_size_binary(width) column as a NumPy "S{width}" array (b"" where null), one copy."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.binary(width))
    dtype = np.dtype(f"S{width}")
    if len(column) == 0:
        return np.zeros(0, dtype)
    data = np.frombuffer(column.buffers()[1], dtype=dtype, count=column.offset + len(column))
    out = data[column.offset :].copy()
    if column.null_count:
        out[column.is_null().to_numpy(zero_copy_only=False)] = b""
    return out
