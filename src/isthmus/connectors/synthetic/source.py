"""The synthetic source: emits ``k * period`` samples for every elapsed period ``k``.

It starts at the first period after it starts (no back-fill): a restarted edge leaves a
gap of samples that were never produced, never acknowledged.  When the pipeline is slow
it falls behind and catches up ``max_ticks_per_emit`` periods at a time: it never skips
a period it has started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.synthetic.config import SyntheticSourceConfig
from isthmus.model.batch import Batch
from isthmus.model.config import TagConfig
from isthmus.model.quality import Quality

VALUE_MODULO = 1 << 20


def value_of(
    position: npt.NDArray[np.int64] | int, k: npt.NDArray[np.int64] | int
) -> npt.NDArray[np.float64]:
    """The value of sample ``k`` of the tag at ``position`` in the source's tag map."""
    return np.asarray((np.asarray(k) % VALUE_MODULO) + np.asarray(position) * 0.001, np.float64)


class SyntheticSource:
    def __init__(
        self,
        config: SyntheticSourceConfig,
        tags: Sequence[BoundTag[TagConfig]],
        ctx: SourceContext,
    ) -> None:
        self.name = config.name
        self.config = config
        self.ctx = ctx
        self._ids = np.array([t.tag_id for t in tags], dtype=np.int32)
        self._positions = np.arange(len(tags), dtype=np.int64)
        self._period_ns = max(1, int(config.period * 1e9))
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def batch(self, first_k: int, last_k: int) -> Batch:
        """Samples of periods ``first_k..last_k`` (inclusive) for every tag."""
        ks = np.arange(first_k, last_k + 1, dtype=np.int64)
        n_tags = len(self._ids)
        k_col = np.repeat(ks, n_tags)
        pos_col = np.tile(self._positions, len(ks))
        return Batch(
            np.tile(self._ids, len(ks)),
            k_col * self._period_ns,
            value_of(pos_col, k_col),
            np.full(len(k_col), int(Quality.GOOD), dtype=np.uint32),
        )

    async def run(self) -> None:
        if not len(self._ids):
            return
        self._connected = True
        next_k = self.ctx.clock.now_ns() // self._period_ns + 1
        try:
            while True:
                await asyncio.sleep(self.config.emit_interval)
                due = self.ctx.clock.now_ns() // self._period_ns
                if due < next_k:
                    continue
                last = min(due, next_k + self.config.max_ticks_per_emit - 1)
                batch = self.batch(next_k, last)
                await self.ctx.emit(batch)
                self.ctx.metrics.inc(f"source.{self.name}.samples", len(batch))
                next_k = last + 1
        finally:
            self._connected = False
