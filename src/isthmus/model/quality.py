"""Sample quality, with OPC UA StatusCode semantics.

A quality is the 32-bit OPC UA status code: the two top bits give the severity
(00 Good, 01 Uncertain, 10/11 Bad) and the next 14 bits the reason.  Batches carry
qualities as a ``uint32`` column, so every connector and store speaks the same codes.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt


class Quality(IntEnum):
    """The status codes Isthmus produces itself (a subset of OPC UA Part 4/6)."""

    GOOD = 0x00000000
    GOOD_LOCAL_OVERRIDE = 0x00960000
    UNCERTAIN = 0x40000000
    UNCERTAIN_LAST_USABLE_VALUE = 0x40900000
    UNCERTAIN_SENSOR_NOT_ACCURATE = 0x40930000
    UNCERTAIN_ENGINEERING_UNITS_EXCEEDED = 0x40940000
    BAD = 0x80000000
    BAD_COMMUNICATION_ERROR = 0x80050000
    BAD_DECODING_ERROR = 0x80070000
    BAD_TIMEOUT = 0x800A0000
    BAD_NO_COMMUNICATION = 0x80310000
    BAD_WAITING_FOR_INITIAL_DATA = 0x80320000
    BAD_OUT_OF_RANGE = 0x803C0000
    BAD_NO_DATA = 0x809B0000
    BAD_CONFIGURATION_ERROR = 0x80890000
    BAD_NOT_CONNECTED = 0x808A0000
    BAD_DEVICE_FAILURE = 0x808B0000
    BAD_SENSOR_FAILURE = 0x808C0000


_NAMES: dict[int, str] = {
    Quality.GOOD: "Good",
    Quality.GOOD_LOCAL_OVERRIDE: "Good_LocalOverride",
    Quality.UNCERTAIN: "Uncertain",
    Quality.UNCERTAIN_LAST_USABLE_VALUE: "Uncertain_LastUsableValue",
    Quality.UNCERTAIN_SENSOR_NOT_ACCURATE: "Uncertain_SensorNotAccurate",
    Quality.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED: "Uncertain_EngineeringUnitsExceeded",
    Quality.BAD: "Bad",
    Quality.BAD_COMMUNICATION_ERROR: "Bad_CommunicationError",
    Quality.BAD_DECODING_ERROR: "Bad_DecodingError",
    Quality.BAD_TIMEOUT: "Bad_Timeout",
    Quality.BAD_NO_COMMUNICATION: "Bad_NoCommunication",
    Quality.BAD_WAITING_FOR_INITIAL_DATA: "Bad_WaitingForInitialData",
    Quality.BAD_OUT_OF_RANGE: "Bad_OutOfRange",
    Quality.BAD_NO_DATA: "Bad_NoData",
    Quality.BAD_CONFIGURATION_ERROR: "Bad_ConfigurationError",
    Quality.BAD_NOT_CONNECTED: "Bad_NotConnected",
    Quality.BAD_DEVICE_FAILURE: "Bad_DeviceFailure",
    Quality.BAD_SENSOR_FAILURE: "Bad_SensorFailure",
}

SEVERITY_MASK = 0xC0000000
# The low 16 bits of a status code are info bits (limits, overflow); the reason is above.
_REASON_MASK = 0xFFFF0000


def severity(code: int) -> str:
    """``"Good"``, ``"Uncertain"`` or ``"Bad"`` for a status code."""
    top = (code & SEVERITY_MASK) >> 30
    if top == 0:
        return "Good"
    if top == 1:
        return "Uncertain"
    return "Bad"


def quality_name(code: int) -> str:
    """A readable name such as ``Bad_CommunicationError``; unknown codes keep their hex."""
    code = int(code) & 0xFFFFFFFF
    name = _NAMES.get(code & _REASON_MASK)
    if name is not None:
        return name
    return f"{severity(code)} (0x{code:08X})"


def is_good(codes: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
    """Vectorised: which qualities are Good."""
    good: npt.NDArray[np.bool_] = (codes & np.uint32(SEVERITY_MASK)) == 0
    return good


def is_bad(codes: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
    """Vectorised: which qualities are Bad."""
    bad: npt.NDArray[np.bool_] = (codes & np.uint32(0x80000000)) != 0
    return bad
