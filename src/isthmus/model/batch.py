"""The unit that crosses every boundary: a batch of samples as NumPy columns.

A batch holds four equal-length columns: ``tag_id`` (int32, an index into the running
tag table), ``ts`` (int64, UTC nanoseconds), ``value`` (float64; booleans are 0/1) and
``quality`` (uint32, an OPC UA status code, see :mod:`isthmus.model.quality`).
Connectors produce one batch per poll or publish response; qualify, transport and
historian handle whole batches.  Never build per-sample Python objects on the hot path.

String samples: an optional fifth column ``text`` (an object array aligned with the
rows) holds the ``str`` of each string-tag row and ``None`` for numeric rows; a string
row's ``value`` is NaN.  All-numeric batches leave ``text`` as ``None``, so the numeric
hot path costs nothing extra; operations keep the column only while a row needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import is_not

import numpy as np
import numpy.typing as npt

TagIds = npt.NDArray[np.int32]
Timestamps = npt.NDArray[np.int64]
Values = npt.NDArray[np.float64]
Qualities = npt.NDArray[np.uint32]
Texts = npt.NDArray[np.object_]


@dataclass(frozen=True, slots=True)
class Batch:
    tag_id: TagIds
    ts: Timestamps
    value: Values
    quality: Qualities
    historical: bool = False
    """True for data replayed after an outage (store-and-forward), not live."""
    text: Texts | None = None
    """String samples: ``str`` for string-tag rows, ``None`` for numeric rows (whose
    value is in ``value``); ``None`` altogether for an all-numeric batch."""

    def __post_init__(self) -> None:
        n = len(self.tag_id)
        if not (len(self.ts) == len(self.value) == len(self.quality) == n):
            raise ValueError(
                "batch columns differ in length: "
                f"tag_id={n} ts={len(self.ts)} value={len(self.value)} "
                f"quality={len(self.quality)}"
            )
        if self.text is not None and len(self.text) != n:
            raise ValueError(f"batch columns differ in length: tag_id={n} text={len(self.text)}")

    @classmethod
    def of(
        cls,
        tag_id: npt.ArrayLike,
        ts: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike,
        historical: bool = False,
        text: Sequence[str | None] | npt.NDArray[np.object_] | None = None,
    ) -> Batch:
        """Build a batch, coercing each column to its dtype (scalars broadcast).

        ``text`` (one ``str`` or ``None`` per row) makes string rows; their value
        becomes NaN.  A ``text`` holding no string at all is dropped."""
        tag_col = np.ascontiguousarray(tag_id, dtype=np.int32).reshape(-1)
        n = len(tag_col)

        def col(data: npt.ArrayLike, dtype: type[np.generic]) -> npt.NDArray[np.generic]:
            arr = np.asarray(data, dtype=dtype)
            if arr.ndim == 0:
                return np.full(n, arr, dtype=dtype)
            return np.ascontiguousarray(arr.reshape(-1))

        value_col: Values = col(value, np.float64)  # type: ignore[assignment]
        text_col = None if text is None else text_column(text, n)
        if text_col is not None:
            is_text = text_col != None  # noqa: E711 (elementwise on an object array)
            if is_text.any():
                value_col = value_col.copy()
                value_col[is_text] = np.nan
            else:
                text_col = None
        return cls(
            tag_col,
            col(ts, np.int64),  # type: ignore[arg-type]
            value_col,
            col(quality, np.uint32),  # type: ignore[arg-type]
            historical,
            text_col,
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
            None if self.text is None else self.text[index],
        )

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        if not batches:
            return Batch.empty()
        if len(batches) == 1:
            return batches[0]
        text: Texts | None = None
        texts = [b.text for b in batches]
        if any(map(is_not, texts, repeat(None))):  # C loop: cheaper than a generator
            text = np.concatenate(
                [
                    t if t is not None else np.full(len(b), None, object)
                    for t, b in zip(texts, batches, strict=True)
                ]
            )
        return Batch(
            np.concatenate([b.tag_id for b in batches]),
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.value for b in batches]),
            np.concatenate([b.quality for b in batches]),
            all(b.historical for b in batches),
            text,
        )

    @property
    def is_text(self) -> npt.NDArray[np.bool_]:
        """True for string rows (all False for an all-numeric batch)."""
        if self.text is None:
            return np.zeros(len(self), dtype=np.bool_)
        return np.asarray(self.text != None, dtype=np.bool_)  # noqa: E711

    def texts(self) -> list[str | None]:
        """The ``text`` column as a list (all ``None`` for an all-numeric batch)."""
        if self.text is None:
            return [None] * len(self)
        return list(self.text.tolist())

    def sorted(self) -> Batch:
        """Rows ordered by (tag_id, ts), stable."""
        order = np.lexsort((self.ts, self.tag_id))
        return self.select(order)


def text_column(text: Sequence[str | None] | npt.NDArray[np.object_], n: int) -> Texts:
    """An object array of ``n`` entries, each a ``str`` or ``None``."""
    arr = np.empty(n, dtype=object)
    items = list(text.tolist()) if isinstance(text, np.ndarray) else list(text)
    if len(items) != n:
        raise ValueError(f"batch columns differ in length: tag_id={n} text={len(items)}")
    for i, item in enumerate(items):
        if item is not None and not isinstance(item, str):
            raise TypeError(f"text[{i}] is {type(item).__name__}, not str or None")
        arr[i] = item
    return arr
