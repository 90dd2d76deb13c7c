"""Sparkplug integration tests use the private Mosquitto of the MQTT tests."""

from __future__ import annotations

from tests.integration.mqtt.conftest import Broker, broker

__all__ = ["Broker", "broker"]
