from __future__ import annotations

from isthmus.connectors.modbus.source import exception_quality
from isthmus.model.quality import Quality


def test_exception_codes_map_to_qualities() -> None:
    assert exception_quality(1) == Quality.BAD_CONFIGURATION_ERROR
    assert exception_quality(2) == Quality.BAD_CONFIGURATION_ERROR
    assert exception_quality(3) == Quality.BAD_CONFIGURATION_ERROR
    assert exception_quality(4) == Quality.BAD_DEVICE_FAILURE
    assert exception_quality(6) == Quality.BAD_DEVICE_FAILURE
    assert exception_quality(0x0B) == Quality.BAD_COMMUNICATION_ERROR
