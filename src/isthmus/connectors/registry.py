"""The connector registry, built explicitly from each connector folder's ``spec()``."""

from __future__ import annotations

from isthmus.connectors.base import ConnectorSpec
from isthmus.model.config import SourceConfig
from isthmus.model.registry import Registry


def default_connectors() -> Registry[ConnectorSpec]:
    from isthmus.connectors.modbus import spec as modbus_spec
    from isthmus.connectors.mqtt import spec as mqtt_spec
    from isthmus.connectors.opcua import spec as opcua_spec
    from isthmus.connectors.s7 import spec as s7_spec
    from isthmus.connectors.sparkplug import spec as sparkplug_spec
    from isthmus.connectors.synthetic import spec as synthetic_spec

    registry: Registry[ConnectorSpec] = Registry("source type")
    for spec in (
        opcua_spec(),
        modbus_spec(),
        mqtt_spec(),
        sparkplug_spec(),
        s7_spec(),
        synthetic_spec(),
    ):
        registry.register(spec.name, spec)
    return registry


def source_models(registry: Registry[ConnectorSpec]) -> dict[str, type[SourceConfig]]:
    return {name: spec.config_model for name, spec in registry.items()}
