"""String tags over OPC UA against a real asyncua server on 127.0.0.1 (started here):
String and LocalizedText values become text samples, numeric batches stay text-free,
ByteString is refused, typed writes accept text, and `discover` maps the types."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
import pytest_asyncio
from asyncua import Node, Server, ua

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.discover import discover, render_yaml
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.source import OpcUaSource, OpcUaWriteError
from isthmus.model.batch import Batch
from isthmus.model.config import DataType
from isthmus.model.loader import load_plant_config
from isthmus.model.quality import Quality
from tests.integration.connectors.ua_plant import UaPlant as Plant
from tests.integration.connectors.ua_plant import ua_plant
from tests.support import Collector, running_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(20),
    pytest.mark.asyncio(loop_scope="module"),
]

LOGGER = "isthmus.test.opcua.strings"
NS = "urn:isthmus:test:strings"
SPEED, RECIPE, STEP, BLOB, WRONG = 300, 301, 302, 303, 304


async def _mixer(server: Server, ns: int, obj: Node) -> dict[str, Node]:
    nodes = {
        "speed": await obj.add_variable(ua.NodeId("Speed", ns), "Speed", 1.5),
        "recipe": await obj.add_variable(
            ua.NodeId("Recipe", ns), "Recipe", "R-100", varianttype=ua.VariantType.String
        ),
        "step": await obj.add_variable(
            ua.NodeId("Step", ns),
            "Step",
            ua.LocalizedText("Fill", "en"),
            varianttype=ua.VariantType.LocalizedText,
        ),
        "blob": await obj.add_variable(
            ua.NodeId("Blob", ns), "Blob", b"\x00\x01", varianttype=ua.VariantType.ByteString
        ),
    }
    await nodes["recipe"].set_writable()
    # a (misplaced) EURange on a String node: discover must not write a range for it
    await nodes["recipe"].add_property(ns, "EURange", ua.Range(0.0, 10.0))
    return nodes


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant() -> AsyncIterator[Plant]:
    async with ua_plant(NS, "Mixer", _mixer, "/isthmus/") as p:
        yield p


def make_source(plant: Plant, collector: Collector) -> OpcUaSource:
    ns = plant.ns
    config = OpcUaSourceConfig.model_validate(
        {
            "name": "ua-text",
            "endpoint": plant.endpoint,
            "publishing_interval": 0.05,
            "sampling_interval": 0.05,
            "timeout": 2.0,
            "reconnect_max": 0.5,
            "tags": [
                {"path": "a/l/c/e/speed", "node": f"ns={ns};s=Speed"},
                {
                    "path": "a/l/c/e/recipe",
                    "node": f"ns={ns};s=Recipe",
                    "data_type": "string",
                    "writable": True,
                },
                {"path": "a/l/c/e/step", "node": f"ns={ns};s=Step", "data_type": "string"},
                {"path": "a/l/c/e/blob", "node": f"ns={ns};s=Blob", "data_type": "string"},
                {"path": "a/l/c/e/wrong", "node": f"ns={ns};s=Recipe", "data_type": "float64"},
            ],
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(300 + i, t.path, t) for i, t in enumerate(config.tags)
    ]
    return opcua_source(
        config, bound, SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    )


def text_of(tag: int, text: str) -> Callable[[Batch], bool]:
    def check(batch: Batch) -> bool:
        return any(
            t == tag and x == text and q == Quality.GOOD
            for t, x, q in zip(
                batch.tag_id.tolist(), batch.texts(), batch.quality.tolist(), strict=True
            )
        )

    return check


def value_of(tag: int, value: float) -> Callable[[Batch], bool]:
    def check(batch: Batch) -> bool:
        return any(
            t == tag and v == value
            for t, v in zip(batch.tag_id.tolist(), batch.value.tolist(), strict=True)
        )

    return check


async def test_strings_become_text_samples(plant: Plant) -> None:
    collector = Collector()
    source = make_source(plant, collector)
    async with running_source(source):
        first = await collector.wait_for(lambda b: len(b) >= 5)
        rows = {
            t: (v, q, x)
            for t, v, q, x in zip(
                first.tag_id.tolist(),
                first.value.tolist(),
                first.quality.tolist(),
                first.texts(),
                strict=True,
            )
        }
        assert rows[SPEED][:2] == (1.5, Quality.GOOD) and rows[SPEED][2] is None
        assert rows[RECIPE][1:] == (Quality.GOOD, "R-100") and np.isnan(rows[RECIPE][0])
        assert rows[STEP][1:] == (Quality.GOOD, "Fill")  # LocalizedText → its text
        assert rows[BLOB][1:] == (Quality.BAD_DECODING_ERROR, None)  # binary, not text
        assert rows[WRONG][1:] == (Quality.BAD_DECODING_ERROR, None)  # numeric tag, a String

        # A numeric change alone: the batch carries no text column at all.
        await plant.nodes["speed"].write_value(2.5)
        numeric = await collector.wait_for(value_of(SPEED, 2.5))
        assert numeric.text is None

        # The server changes the strings: each change arrives as text.
        await plant.nodes["recipe"].write_value(ua.Variant("R-200", ua.VariantType.String))
        await collector.wait_for(text_of(RECIPE, "R-200"))
        await plant.nodes["step"].write_value(
            ua.Variant(ua.LocalizedText("Mix", "en"), ua.VariantType.LocalizedText)
        )
        await collector.wait_for(text_of(STEP, "Mix"))
        await plant.nodes["recipe"].write_value(ua.Variant("", ua.VariantType.String))
        await collector.wait_for(text_of(RECIPE, ""))

        # Typed writes: text to a String node, read back; a number is refused.
        await source.write("a/l/c/e/recipe", "R-300 ünïcode")
        assert await plant.nodes["recipe"].read_value() == "R-300 ünïcode"
        await collector.wait_for(text_of(RECIPE, "R-300 ünïcode"))
        with pytest.raises(OpcUaWriteError, match="not text"):
            await source.write("a/l/c/e/recipe", 12)
    counters = source.ctx.metrics.counters
    assert counters["source.ua-text.decode_errors"] >= 2


async def test_discover_maps_string_types(plant: Plant) -> None:
    found = await discover(plant.endpoint, request_timeout=5.0)
    text = render_yaml(found, source_name="mixer")
    _, sources = load_plant_config(text, "discovered.yaml", {"opcua": OpcUaSourceConfig})
    by_node = {t.node: t for t in sources[0].tags}  # type: ignore[attr-defined]
    ns = plant.ns
    assert by_node[f"ns={ns};s=Recipe"].data_type is DataType.STRING
    assert by_node[f"ns={ns};s=Recipe"].writable
    assert by_node[f"ns={ns};s=Step"].data_type is DataType.STRING
    assert by_node[f"ns={ns};s=Speed"].data_type is DataType.FLOAT64
    assert f"ns={ns};s=Blob" not in by_node
    assert "ByteString is binary" in text
