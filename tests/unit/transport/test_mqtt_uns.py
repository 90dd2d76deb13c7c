"""The UNS publisher's pure parts: payloads, coalescing, configuration."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import DataType, PlantConfig, TagConfig, UnsConfig
from isthmus.model.quality import Quality
from isthmus.observe.metrics import Metrics
from isthmus.transport.local import LocalTransport
from isthmus.transport.mqtt import UnsPublisher, iso_timestamp, payload


def test_payload_types() -> None:
    ts = 1_700_000_000_000_000_000
    assert json.loads(payload(21.5, Quality.GOOD, ts, DataType.FLOAT64)) == {
        "value": 21.5,
        "quality": "Good",
        "timestamp": "2023-11-14T22:13:20.000000Z",
    }
    assert json.loads(payload(1.0, Quality.GOOD, ts, DataType.BOOL))["value"] is True
    assert json.loads(payload(7.0, Quality.GOOD, ts, DataType.INT32))["value"] == 7
    assert json.loads(payload(7.5, Quality.GOOD, ts, DataType.INT32))["value"] == 7.5
    doc = json.loads(payload(math.nan, Quality.BAD_COMMUNICATION_ERROR, ts, DataType.FLOAT64))
    assert doc["value"] is None and doc["quality"] == "Bad_CommunicationError"


def test_iso_timestamp() -> None:
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert iso_timestamp(1_500) == "1970-01-01T00:00:00.000001Z"


def publisher(prefix: str = "") -> tuple[UnsPublisher, Metrics]:
    catalog = TagCatalog(
        [
            CatalogEntry(1, "e/s/a/l/c/q/t1", "src", TagConfig(path="a/l/c/q/t1")),
            CatalogEntry(2, "e/s/a/l/c/q/t2", "src", TagConfig(path="a/l/c/q/t2")),
        ]
    )
    metrics = Metrics()
    cfg = UnsConfig(host="h", prefix=prefix)
    return UnsPublisher(cfg, catalog, LocalTransport(metrics), metrics, client_id="x"), metrics


def test_topics_with_prefix() -> None:
    pub, _ = publisher("uns/v1")
    assert pub.topics == {1: "uns/v1/e/s/a/l/c/q/t1", 2: "uns/v1/e/s/a/l/c/q/t2"}


def test_offer_keeps_newest_per_tag() -> None:
    pub, metrics = publisher()
    pub.offer(Batch.of([1, 2, 1, 9], [1, 2, 3, 4], [10.0, 20.0, 11.0, 99.0], 0))
    pub.offer(Batch.of([1], [5], [12.0], 0))
    assert pub._pending == {1: (5, 12.0, 0), 2: (2, 20.0, 0)}
    assert pub.latest(1) == (5, 12.0, 0)
    # tag 1 twice in the first batch, then its pending value replaced: 2 never published
    assert metrics.counters["uns.coalesced"] == 2
    pub.offer(Batch.of([2], [6], [0.0], 0, historical=True))  # replay: not the present
    assert pub.latest(2) == (2, 20.0, 0)


def test_uns_config() -> None:
    assert UnsConfig(host="h", prefix="/uns/").prefix == "uns"
    assert UnsConfig(host="h").qos == 1
    for bad in (
        {"prefix": "a/+"},
        {"qos": 2},
        {"password_env": "X"},
        {"ca_file": "ca.pem"},
        {"password": "x"},
    ):
        with pytest.raises(ValidationError):
            UnsConfig.model_validate({"host": "h", **bad})


def test_plant_uns_section_optional() -> None:
    base = {"enterprise": "e", "site": "s", "hierarchy": {}}
    assert PlantConfig.model_validate(base).uns is None
    plant = PlantConfig.model_validate({**base, "uns": {"host": "broker", "min_interval": "2s"}})
    assert plant.uns is not None and plant.uns.min_interval == 2.0


def test_string_samples_publish_their_text() -> None:
    ts = 1_700_000_000_000_000_000
    assert json.loads(payload("PILS-50CL", Quality.GOOD, ts, DataType.STRING))["value"] == (
        "PILS-50CL"
    )
    bad = json.loads(payload(math.nan, Quality.BAD_TIMEOUT, ts, DataType.STRING))
    assert bad["value"] is None and bad["quality"] == "Bad_Timeout"
    pub, _ = publisher()
    pub.offer(Batch.of([1, 2, 1], [1, 1, 2], [0.0, 5.0, 0.0], 0, text=["A", None, "B"]))
    assert pub._pending == {1: (2, "B", 0), 2: (1, 5.0, 0)}
