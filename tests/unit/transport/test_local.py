from __future__ import annotations

import asyncio

from isthmus.model.batch import Batch
from isthmus.transport.local import LocalTransport


def batch(v: float) -> Batch:
    return Batch.of([0], [1], [v], 0)


async def test_fan_out_to_every_subscriber() -> None:
    t = LocalTransport()
    a, b = t.subscribe("a"), t.subscribe("b")
    await t.publish(batch(1))
    assert (await a.get()).value[0] == 1 and (await b.get()).value[0] == 1
    a.close()
    assert t.subscriber_count == 1


async def test_drop_oldest_counts_what_it_drops() -> None:
    t = LocalTransport()
    live = t.subscribe("live", maxsize=2, policy="drop_oldest")
    for v in range(5):
        await t.publish(batch(v))
    assert live.dropped_batches == 3
    assert t.metrics.counters["transport.live.dropped_batches"] == 3
    assert [(await live.get()).value[0] for _ in range(2)] == [3, 4]


async def test_block_policy_applies_backpressure() -> None:
    t = LocalTransport()
    hist = t.subscribe("historian", maxsize=1, policy="block")
    await t.publish(batch(1))
    pending = asyncio.create_task(t.publish(batch(2)))
    await asyncio.sleep(0.05)
    assert not pending.done()  # waits rather than dropping
    assert (await hist.get()).value[0] == 1
    await asyncio.wait_for(pending, 1)
    assert (await hist.get()).value[0] == 2
    assert hist.dropped_batches == 0


async def test_empty_batches_are_not_published() -> None:
    t = LocalTransport()
    sub = t.subscribe("s")
    await t.publish(Batch.empty())
    assert sub.qsize() == 0
