"""The OPC UA examples in the docs and sample.yaml are valid configurations."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from isthmus.connectors.opcua.config import OpcUaSourceConfig
from isthmus.model.loader import load_plant_config

ROOT = Path(__file__).resolve().parents[3]


def test_sample_yaml_validates() -> None:
    blocks = yaml.safe_load((ROOT / "src/isthmus/connectors/opcua/sample.yaml").read_text())
    for block in blocks:
        OpcUaSourceConfig.model_validate(block)


def test_docs_example_is_a_valid_plant_file() -> None:
    text = (ROOT / "docs/connectors/opcua.md").read_text()
    (example,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "version: 1" in b]
    _, sources = load_plant_config(example, "opcua.md", {"opcua": OpcUaSourceConfig})
    (source,) = sources
    assert isinstance(source, OpcUaSourceConfig)
    assert source.security_mode == "SignAndEncrypt"


def test_docs_list_every_option() -> None:
    text = (ROOT / "docs/connectors/opcua.md").read_text()
    for key in OpcUaSourceConfig.model_fields:
        if key not in ("type", "tags"):
            assert f"`{key}`" in text, key
