"""What a configuration promises about commands is checked up front: ``writable: true``
on a connector that cannot write, an MQTT writable tag without ``command:``, and an
unknown placeholder in a command template are errors naming file, line and field —
through the loader and through ``isthmus check`` in a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from isthmus.connectors.base import Commander
from isthmus.connectors.mqtt.command import check_template, fill, render
from isthmus.connectors.mqtt.config import MqttTagConfig
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.model.batch import Batch
from isthmus.model.config import DataType
from isthmus.model.errors import ConfigError, ConfigIssue
from isthmus.model.loader import load_plant_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HEAD = """\
enterprise: acme
site: lyon
hierarchy:
  a: {l: {c: [e]}}
sources:
"""

MQTT_SOURCE = """\
  - name: broker
    type: mqtt
    host: 127.0.0.1
    subscriptions:
      - topic: plant/state/{name}
        values: [{field: $.value, tag: "a/l/c/e/{name}"}]
    tags:
      - path: a/l/c/e/speed
        writable: true
      - path: a/l/c/e/level
        writable: true
        command: {topic: "plant/cmd/{tag}", payload: '{"v": {value}, "at": {when}}'}
      - path: a/l/c/e/mode
        writable: true
        command: {topic: "plant/+/{tag}"}
      - path: a/l/c/e/ok
        writable: true
        command: {topic: "plant/cmd/{path}", payload: '{"value": {value}, "ts": {ts}}'}
"""

SYNTHETIC_SOURCE = """\
  - name: gen
    type: synthetic
    tags:
      - path: a/l/c/e/wave
      - path: a/l/c/e/sp
        writable: true
"""


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_plant_config(text, "plant.yaml", source_models(default_connectors()))
    return info.value.issues


def test_mqtt_command_problems_name_file_line_and_field() -> None:
    found = {i.path: i for i in issues(HEAD + MQTT_SOURCE)}
    assert set(found) == {"sources.0.tags.1.command.payload", "sources.0.tags.2.command.topic"}
    placeholder = found["sources.0.tags.1.command.payload"]
    assert (placeholder.file, placeholder.line) == ("plant.yaml", 17)
    assert "unknown placeholder {when}" in placeholder.message
    assert "{path}, {tag}, {ts}, {value}" in placeholder.message
    topic = found["sources.0.tags.2.command.topic"]
    assert topic.line == 20 and "wildcard" in topic.message
    # once the templates are right, the writable tag without command: is reported
    fixed = MQTT_SOURCE.replace(', "at": {when}', "").replace("plant/+/{tag}", "p/{tag}")
    (missing,) = issues(HEAD + fixed)
    assert (missing.file, missing.line, missing.path) == (
        "plant.yaml",
        14,
        "sources.0.tags.0.writable",
    )
    assert "has no command" in missing.message


def test_writable_on_a_connector_that_cannot_write() -> None:
    (issue,) = issues(HEAD + SYNTHETIC_SOURCE)
    assert (issue.file, issue.line, issue.path) == ("plant.yaml", 11, "sources.0.tags.1.writable")
    assert "synthetic" in issue.message and "cannot write" in issue.message


def test_every_connector_that_says_it_writes_is_a_commander() -> None:
    from isthmus.connectors.base import SourceContext

    writers = {name for name, spec in default_connectors().items() if spec.config_model.can_command}
    assert writers == {"opcua", "modbus", "s7", "sparkplug", "mqtt"}
    for name in writers:
        spec = default_connectors().get(name)
        assert spec is not None
        raws: dict[str, dict[str, Any]] = {
            "opcua": {"endpoint": "opc.tcp://127.0.0.1:4840"},
            "modbus": {"host": "127.0.0.1"},
            "s7": {"host": "127.0.0.1"},
            "sparkplug": {"host": "127.0.0.1", "groups": ["g"]},
            "mqtt": {"host": "127.0.0.1", "subscriptions": [{"topic": "t", "values": [
                {"tag": "a/l/c/e/x"}]}]},
        }  # fmt: skip
        config = spec.config_model.model_validate({"name": "s", "type": name} | raws[name])

        async def emit(_batch: Batch) -> None:
            pass

        source = spec.factory(config, [], SourceContext(emit=emit))
        assert isinstance(source, Commander), name


def test_command_templates() -> None:
    assert check_template('{"value": {value}}', "payload") == '{"value": {value}}'
    with pytest.raises(ValueError, match=r"unknown placeholder \{valeu\}"):
        check_template("{valeu}", "payload")
    assert fill("{a}/{tag}/{x", {"tag": "t"}) == "{a}/t/{x"
    tag = MqttTagConfig(path="a/l/c/e/name", data_type=DataType.STRING, writable=True)
    message = render("set/{tag}/{value}", '{"value": {value}}', tag, 'say "hi"', 5)
    assert message.topic == 'set/name/say "hi"'
    assert message.payload == '{"value": "say \\"hi\\""}'
    with pytest.raises(ValueError, match="not a topic name"):
        render("set/{value}", "{value}", tag, "a/+/b", 5)


def test_isthmus_check_reports_them(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(HEAD + SYNTHETIC_SOURCE)
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus", "check", str(plant)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert f"{plant}:11: sources.0.tags.1.writable:" in " ".join(output.split()), output
