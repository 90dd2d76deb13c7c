"""Pure parts of the edge/hub transport: names, chunking, the synthetic source, config."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.synthetic.config import SyntheticSourceConfig
from isthmus.connectors.synthetic.source import SyntheticSource, value_of
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.config import TagConfig, TransportConfig
from isthmus.transport.nats.connect import connect_options, msg_id, stream_for, subject_for
from isthmus.transport.nats.spooler import chunks


def test_names_of_a_site() -> None:
    assert subject_for("lyon") == "isthmus.lyon.batch"
    assert stream_for("lyon") == "ISTHMUS_LYON"
    assert subject_for("plant.2") == "isthmus.plant_2.batch"  # one subject token
    assert stream_for("north-1") == "ISTHMUS_NORTH_1"
    assert msg_id("lyon", 42) == "lyon:42"


def test_chunks_keep_order_and_bound_size() -> None:
    batch = Batch.of(np.arange(10), np.arange(10), np.arange(10.0), 0)
    parts = chunks(batch, 4)
    assert [len(p) for p in parts] == [4, 4, 2]
    assert np.concatenate([p.ts for p in parts]).tolist() == list(range(10))
    assert chunks(batch, 10) == [batch]


def test_transport_config_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="password_env needs a user"):
        TransportConfig(password_env="X")
    with pytest.raises(ValidationError, match="at least one"):
        TransportConfig(servers=[])
    with pytest.raises(ValidationError):
        TransportConfig(stream={"replicas": 2})  # type: ignore[arg-type]
    cfg = TransportConfig(user="edge", password_env="NATS_PW")
    monkeypatch.setenv("NATS_PW", "s3cret")
    assert connect_options(cfg, "n")["password"] == "s3cret"
    monkeypatch.delenv("NATS_PW")
    with pytest.raises(Exception, match="NATS_PW is not set"):
        connect_options(cfg, "n")


async def test_synthetic_source_is_deterministic_and_gapless() -> None:
    clock = ManualClock(start_ns=1_000_000_000_000)
    got: list[Batch] = []

    async def emit(b: Batch) -> None:
        got.append(b)

    cfg = SyntheticSourceConfig(
        name="gen", type="synthetic", period=0.01, emit_interval=0.001, max_ticks_per_emit=3
    )
    tags = [
        BoundTag(10 + i, f"acme/s/a/l/c/e/t{i}", TagConfig(path=f"a/l/c/e/t{i}")) for i in range(2)
    ]
    src = SyntheticSource(cfg, tags, SourceContext(emit=emit, clock=clock))
    task = asyncio.create_task(src.run())
    for _ in range(5000):
        if len(got) >= 5:
            break
        clock.advance(0.05)  # five periods due: emitted three at a time at most
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    batch = Batch.concat(got)
    period = 10_000_000
    ks = batch.ts // period
    for tag in (10, 11):
        k = ks[batch.tag_id == tag]
        assert (np.diff(k) == 1).all()  # one sample per period, no gap, no repeat
    assert (batch.ts % period == 0).all()
    np.testing.assert_array_equal(batch.value, value_of(batch.tag_id - 10, ks))
    assert max(len(b) for b in got) <= 3 * 2  # catch-up bounded per emit
