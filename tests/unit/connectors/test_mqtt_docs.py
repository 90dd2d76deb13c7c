"""The MQTT examples in the docs and sample.yaml are valid configurations."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from isthmus.connectors.mqtt.config import MqttSourceConfig
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.model.loader import load_plant_config

ROOT = Path(__file__).resolve().parents[3]


def test_sample_yaml_validates() -> None:
    blocks = yaml.safe_load((ROOT / "src/isthmus/connectors/mqtt/sample.yaml").read_text())
    for block in blocks:
        cfg = MqttSourceConfig.model_validate(block)
        assert cfg.password_env == "MQTT_PASSWORD"


def test_docs_example_plant_validates() -> None:
    page = (ROOT / "docs/connectors/mqtt.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", page, re.S)
    assert example is not None
    plant, sources = load_plant_config(
        example.group(1), "mqtt.md", source_models(default_connectors())
    )
    assert plant.uns is not None and plant.uns.prefix == "uns/v1"
    assert [s.type for s in sources] == ["mqtt"]
