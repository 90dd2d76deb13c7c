"""The bottling line served over OPC UA (asyncua), built from :data:`OPCUA_VARIABLES`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from isthmus.model.config import DataType
from isthmus.sim.addressspace import (
    OPCUA_NAMESPACE_INDEX,
    OPCUA_NAMESPACE_URI,
    OPCUA_SETPOINTS,
    OPCUA_VARIABLES,
    OpcUaVariable,
    opcua_folders,
)
from isthmus.sim.model import SignalValue

log = logging.getLogger("isthmus.sim.opcua")

_VARIANT = {
    DataType.BOOL: ua.VariantType.Boolean,
    DataType.INT16: ua.VariantType.Int16,
    DataType.UINT16: ua.VariantType.UInt16,
    DataType.INT32: ua.VariantType.Int32,
    DataType.UINT32: ua.VariantType.UInt32,
    DataType.INT64: ua.VariantType.Int64,
    DataType.UINT64: ua.VariantType.UInt64,
    DataType.FLOAT32: ua.VariantType.Float,
    DataType.FLOAT64: ua.VariantType.Double,
}
_CURRENT_TIME = ua.NodeId.from_string(f"i={ObjectIds.Server_ServerStatus_CurrentTime}")
_RANGE_TYPE = ua.NodeId.from_string(f"i={ObjectIds.Range}")
_EU_TYPE = ua.NodeId.from_string(f"i={ObjectIds.EUInformation}")
_UNECE_UNITS = "http://www.opcfoundation.org/UA/units/un/cefact"


def _nid(idx: int, text: str) -> ua.NodeId:
    return ua.NodeId.from_string(f"ns={idx};s={text}")


def _python_value(var: OpcUaVariable, value: SignalValue) -> float | int | bool:
    if var.data_type == DataType.BOOL:
        return bool(value)
    if var.data_type in (DataType.FLOAT32, DataType.FLOAT64):
        return float(value)
    return int(value)


class SimOpcUaServer:
    """An anonymous, security-None OPC UA server with one variable per line signal."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.server = Server()
        self._ids: dict[str, ua.NodeId] = {}  # signal → node id
        self._vars: dict[str, OpcUaVariable] = {}
        self._last: dict[str, SignalValue] = {}
        self._clock_at: datetime | None = None

    async def start(self, initial: dict[str, SignalValue]) -> None:
        server = self.server
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/")
        server.set_server_name("Isthmus plant simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        # asyncua's own clock task sleeps 1 s between updates and stop() waits for it;
        # push() keeps ServerStatus.CurrentTime up to date instead, so stop is fast.
        server.disable_clock(True)
        idx = await server.register_namespace(OPCUA_NAMESPACE_URI)
        if idx != OPCUA_NAMESPACE_INDEX:
            raise RuntimeError(
                f"namespace {OPCUA_NAMESPACE_URI} got index {idx}, "
                f"expected {OPCUA_NAMESPACE_INDEX}: node ids would not match"
            )
        folders: dict[str, Node] = {"": server.nodes.objects}
        for path in opcua_folders():
            parent_path, _, name = path.rpartition(".")
            folders[path] = await folders[parent_path].add_folder(_nid(idx, path), name)
        for var in OPCUA_VARIABLES:
            await self._add_variable(folders[var.folder], var, initial[var.signal], idx)
        await server.start()
        self._last = {v.signal: initial[v.signal] for v in OPCUA_VARIABLES}
        log.info("OPC UA simulator listening on opc.tcp://%s:%d/", self.host, self.port)

    async def _add_variable(
        self, parent: Node, var: OpcUaVariable, value: SignalValue, idx: int
    ) -> None:
        vtype = _VARIANT[var.data_type]
        node = await parent.add_variable(
            _nid(idx, var.node),
            ua.QualifiedName.from_string(f"{idx}:{var.browse_name}"),
            ua.Variant(_python_value(var, value), vtype),
        )
        if var.writable:
            await node.set_writable()
        if var.description:
            await node.write_attribute(
                AttributeIds.Description,
                ua.DataValue(
                    ua.Variant(ua.LocalizedText(var.description), ua.VariantType.LocalizedText)
                ),
            )
        if var.unit:
            eu = ua.EUInformation(
                NamespaceUri=_UNECE_UNITS,
                UnitId=-1,
                DisplayName=ua.LocalizedText(var.unit),
                Description=ua.LocalizedText(var.unit),
            )
            await node.add_property(
                _nid(idx, f"{var.node}.EngineeringUnits"),
                "EngineeringUnits",
                eu,
                datatype=_EU_TYPE,
            )
        if var.range is not None:
            await node.add_property(
                _nid(idx, f"{var.node}.EURange"),
                "EURange",
                ua.Range(Low=float(var.range[0]), High=float(var.range[1])),
                datatype=_RANGE_TYPE,
            )
        self._ids[var.signal] = node.nodeid
        self._vars[var.signal] = var

    def read_setpoints(self) -> dict[str, float]:
        """Setpoints written by clients since the last push: model name → value."""
        changed: dict[str, float] = {}
        for signal, name in OPCUA_SETPOINTS.items():
            dv = self.server.read_attribute_value(self._ids[signal])
            value = dv.Value.Value if dv.Value is not None else None
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if value != self._last.get(signal):
                changed[name] = float(value)
                self._last.pop(signal, None)  # the next push writes back the applied value
        return changed

    async def push(self, values: dict[str, SignalValue], now: datetime | None = None) -> int:
        """Write the values that changed since the last push; returns how many."""
        stamp = now or datetime.now(UTC)
        if self._clock_at is None or (stamp - self._clock_at).total_seconds() >= 1.0:
            self._clock_at = stamp
            await self.server.write_attribute_value(
                _CURRENT_TIME, ua.DataValue(ua.Variant(stamp, ua.VariantType.DateTime))
            )
        ua_stamp = cast(Any, stamp)  # asyncua's DateTime is a datetime subclass
        written = 0
        for signal, node_id in self._ids.items():
            value = values[signal]
            if self._last.get(signal) == value:
                continue
            var = self._vars[signal]
            dv = ua.DataValue(
                ua.Variant(_python_value(var, value), _VARIANT[var.data_type]),
                SourceTimestamp=ua_stamp,
                ServerTimestamp=ua_stamp,
            )
            await self.server.write_attribute_value(node_id, dv)
            self._last[signal] = value
            written += 1
        return written

    async def stop(self) -> None:
        await self.server.stop()
