"""A small unsecured asyncua server on a free 127.0.0.1 port for the OPC UA tests: one
namespace, one object, the variables a test adds to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from asyncua import Node, Server, ua

from tests.support import free_port


@dataclass
class UaPlant:
    server: Server
    endpoint: str
    ns: int
    nodes: dict[str, Node]


@contextlib.asynccontextmanager
async def ua_plant(
    namespace: str,
    obj_name: str,
    build: Callable[[Server, int, Node], Awaitable[dict[str, Node]]],
    path: str = "/",
) -> AsyncIterator[UaPlant]:
    """Start the server with ``build(server, ns, obj)``'s variables (under object
    ``obj_name`` of namespace ``namespace``); stopped on exit."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}{path}"
    server = Server()
    await server.init()
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(namespace)
    obj = await server.nodes.objects.add_object(ua.NodeId(obj_name, ns), obj_name)
    nodes = await build(server, ns, obj)
    await server.start()
    try:
        yield UaPlant(server, endpoint, ns, nodes)
    finally:
        await server.stop()
