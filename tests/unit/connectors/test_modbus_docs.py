"""The Modbus examples in the docs and sample.yaml are valid configurations, and the
docs page names every option of the config models."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.model.loader import load_plant_config

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs/connectors/modbus.md"


def test_sample_yaml_validates() -> None:
    blocks = yaml.safe_load((ROOT / "src/isthmus/connectors/modbus/sample.yaml").read_text())
    (cfg,) = [ModbusSourceConfig.model_validate(block) for block in blocks]
    assert set(cfg.poll_groups) == {"fast", "slow"}
    assert any(t.bit is not None for t in cfg.tags)


def test_docs_example_plant_validates() -> None:
    example = re.search(r"```yaml\n(.*?)```", PAGE.read_text(), re.S)
    assert example is not None
    _, sources = load_plant_config(
        example.group(1), "modbus.md", source_models(default_connectors())
    )
    (source,) = sources
    assert isinstance(source, ModbusSourceConfig)
    assert {t.poll_group for t in source.tags} == {None, "fast", "slow"}


def test_docs_name_every_option() -> None:
    page = PAGE.read_text()
    for model in (ModbusSourceConfig, ModbusTagConfig):
        for name in model.model_fields:
            assert f"`{name}`" in page, name
