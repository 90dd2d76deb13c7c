"""String samples in the historian: the parts every backend shares (pure: no I/O).

Each backend keeps string samples in their own table,
``samples_text(tag_id, ts, value text, quality)`` keyed by ``(tag_id, ts)`` (first
written wins, as for numbers), beside the numeric ``samples``: the numeric tables, their
fast append paths and their aggregates stay untouched.  A store's ``write`` hands a
batch holding text (``Batch.text``) to :func:`write_mixed`, which splits it; reads
(``raw``, ``before``, ``last``) merge the rows of both tables with the helpers below, so
a string tag's samples come back with their text.  Aggregates of a tag holding strings
raise :class:`NotNumericError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from isthmus.model.batch import Batch
from isthmus.model.errors import StoreError


class NotNumericError(StoreError):
    """Aggregates were asked of a tag that holds strings."""

    def __init__(self, tag: int | str) -> None:
        super().__init__(f"tag {tag} holds strings; aggregates need a numeric tag")
        self.tag = tag


def split_text(batch: Batch) -> tuple[Batch, Batch | None]:
    """``(numeric rows without a text column, string rows or None)``."""
    if batch.text is None:
        return batch, None
    is_text = batch.is_text
    numeric = batch.select(~is_text)
    numeric = Batch(numeric.tag_id, numeric.ts, numeric.value, numeric.quality, batch.historical)
    if not is_text.any():
        return numeric, None
    return numeric, batch.select(is_text)


def write_mixed(
    batch: Batch,
    write_numeric: Callable[[Batch], int],
    write_strings: Callable[[Batch], int],
) -> int:
    """Write a batch holding text: its string rows, then its numeric ones; returns the
    number of new rows.  Not one transaction across the two tables, but both writes
    are idempotent, so retrying the whole batch after a failure stores each row once."""
    numeric, strings = split_text(batch)
    inserted = write_strings(strings) if strings is not None else 0
    if len(numeric):
        inserted += write_numeric(numeric)
    return inserted


def text_rows(batch: Batch) -> list[tuple[int, int, str, int]]:
    """``(tag_id, ts, text, quality)`` per string row (few per batch: plain tuples)."""
    assert batch.text is not None
    return list(
        zip(
            batch.tag_id.tolist(),
            batch.ts.tolist(),
            batch.text.tolist(),
            batch.quality.tolist(),
            strict=True,
        )
    )


def from_rows(rows: Sequence[tuple[int, int, str, int]]) -> Batch:
    """String samples read back: ``(tag_id, ts, text, quality)`` rows (quality unsigned)."""
    if not rows:
        return Batch.empty()
    tag, ts, text, quality = zip(*rows, strict=True)
    return Batch.of(tag, ts, 0.0, np.asarray(quality, dtype=np.int64), text=list(text))


def merge_range(numeric: Batch, strings: Batch, limit: int) -> Batch:
    """One tag's rows of both tables, oldest first, at most ``limit``."""
    if len(strings) == 0:
        return numeric
    if len(numeric) == 0:
        return strings
    merged = Batch.concat([numeric, strings])
    order = np.argsort(merged.ts, kind="stable")[:limit]
    return merged.select(order)


def newest(numeric: Batch, strings: Batch) -> Batch:
    """The newest row (0 or 1) of two ``before`` answers."""
    if len(strings) == 0:
        return numeric
    if len(numeric) == 0:
        return strings
    return strings if int(strings.ts[-1]) > int(numeric.ts[-1]) else numeric


def newest_per_tag(numeric: Batch, strings: Batch) -> Batch:
    """The newest row of each tag from two ``last`` answers, ordered by tag id."""
    if len(strings) == 0:
        return numeric
    merged = Batch.concat([numeric, strings]).sorted()
    tags = merged.tag_id
    ends = np.flatnonzero(np.append(tags[1:] != tags[:-1], True))
    return merged.select(ends)
