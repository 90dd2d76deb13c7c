"""The unit that crosses every boundary: a batch of samples as NumPy columns.

A batch holds four equal-length columns: ``tag_id`` (int32, an index into the running
tag table), ``ts`` (int64, UTC nanoseconds), ``value`` (float64; booleans are 0/1) and
``quality`` (uint32, an OPC UA status code, see :mod:`isthmus.model.quality`).
Connectors produce one batch per poll or publish response; qualify, transport and
historian handle whole batches.  Never build per-sample Python objects on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TagIds = npt.NDArray[np.int32]
Timestamps = npt.NDArray[np.int64]
Values = npt.NDArray[np.float64]
Qualities = npt.NDArray[np.uint32]


@dataclass(frozen=True, slots=True)
class Batch:
    tag_id: TagIds
    ts: Timestamps
    value: Values
    quality: Qualities
    historical: bool = False
    """True for data replayed after an outage (store-and-forward), not live."""

    def __post_init__(self) -> None:
        n = len(self.tag_id)
        if not (len(self.ts) == len(self.value) == len(self.quality) == n):
            raise ValueError(
                "batch columns differ in length: "
                f"tag_id={n} ts={len(self.ts)} value={len(self.value)} "
                f"quality={len(self.quality)}"
            )

    @classmethod
    def of(
        cls,
        tag_id: npt.ArrayLike,
        ts: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike,
        historical: bool = False,
    ) -> Batch:
        """Build a batch, coercing each column to its dtype (scalars broadcast)."""
        tag_col = np.ascontiguousarray(tag_id, dtype=np.int32).reshape(-1)
        n = len(tag_col)

        def col(data: npt.ArrayLike, dtype: type[np.generic]) -> npt.NDArray[np.generic]:
            arr = np.asarray(data, dtype=dtype)
            if arr.ndim == 0:
                return np.full(n, arr, dtype=dtype)
            return np.ascontiguousarray(arr.reshape(-1))

        return cls(
            tag_col,
            col(ts, np.int64),  # type: ignore[arg-type]
            col(value, np.float64),  # type: ignore[arg-type]
            col(quality, np.uint32),  # type: ignore[arg-type]
            historical,
        )

    @classmethod
    def empty(cls) -> Batch:
        return cls.of([], [], [], [])

    def __len__(self) -> int:
        return len(self.tag_id)

    def select(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Batch:
        """The rows picked by a boolean mask or an index array."""
        return Batch(
            self.tag_id[index],
            self.ts[index],
            self.value[index],
            self.quality[index],
            self.historical,
        )

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        if not batches:
            return Batch.empty()
        if len(batches) == 1:
            return batches[0]
        return Batch(
            np.concatenate([b.tag_id for b in batches]),
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.value for b in batches]),
            np.concatenate([b.quality for b in batches]),
            all(b.historical for b in batches),
        )

    def sorted(self) -> Batch:
        """Rows ordered by (tag_id, ts), stable."""
        order = np.lexsort((self.ts, self.tag_id))
        return self.select(order)
