"""OPC UA against node-opcua, an implementation we did not write.

* Our source against a node-opcua server (``node_opcua/secure_server.js``) that offers
  only SignAndEncrypt (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss),
  no anonymous access, one username/password user.  Our connector refuses the server
  until its certificate is trusted with ``isthmus certs trust``, then reads changing
  values with Good quality and writes with type coercion and read-back.  The node-opcua
  server refuses unknown clients; ours is trusted explicitly (its certificate is handed
  to node-opcua's ``OPCUACertificateManager.trustCertificate``, which files it under the
  server's ``trusted/certs``), not by automatic acceptance.
* A node-opcua client (``node_opcua/sim_client.js``) against our simulator's OPC UA
  server: browse, read, subscribe and write, checked against the simulator's tables.

Needs ``node`` and ``npm ci --omit=optional`` in ``tests/interop/node_opcua`` (CI does
it); skips locally when either is missing, fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua.client.client import Client
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from isthmus.cli import main
from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.security import Pki, thumbprint
from isthmus.connectors.opcua.source import OpcUaSource, OpcUaWriteError
from isthmus.model.config import DataType, SimulatorConfig
from isthmus.model.quality import Quality
from isthmus.sim.addressspace import OPCUA_NAMESPACE_URI, OPCUA_VARIABLES, opcua_folders
from isthmus.sim.model import FILL_VOLUME_LIMITS
from isthmus.sim.runner import run_simulator
from tests.support import Collector, free_port, require_binary, running_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(40),
    pytest.mark.asyncio(loop_scope="module"),
]

NODE_DIR = Path(__file__).parent / "node_opcua"
HOST = "127.0.0.1"
LOGGER = "isthmus.test.interop.opcua"
PASSWORD_ENV = "ISTHMUS_TEST_NODE_OPCUA_PASSWORD"
PASSWORD = "interop-secret-7"
NAME = "nodeopcua"
TAGS: list[dict[str, Any]] = [
    {"path": "a/l/c/e/counter", "node": "ns=1;s=Plant.Counter"},
    {"path": "a/l/c/e/temperature", "node": "ns=1;s=Plant.Temperature"},
    {"path": "a/l/c/e/state", "node": "ns=1;s=Plant.State"},
    {"path": "a/l/c/e/setpoint", "node": "ns=1;s=Plant.Setpoint", "writable": True},
    {"path": "a/l/c/e/mode", "node": "ns=1;s=Plant.Mode", "writable": True},
]
COUNTER, TEMPERATURE, STATE, SETPOINT, MODE = range(1, 6)  # tag ids, in TAGS order


def require_node_opcua() -> None:
    require_binary("node", "interop: the npm node-opcua server and client")
    if (NODE_DIR / "node_modules" / "node-opcua").is_dir():
        return
    why = f"run `npm ci --omit=optional` in {NODE_DIR}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"node-opcua is required in CI: {why}")
    pytest.skip(f"node-opcua not installed: {why}")


async def stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 3)
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def ready_line(proc: asyncio.subprocess.Process) -> list[str]:
    """The server's "LISTENING ..." line, skipping node-opcua's own log lines (its
    warnings go to stdout); an empty list at end of output."""
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        if line.startswith(b"LISTENING "):
            return line.decode().split()
    return []


@dataclass
class NodeServer:
    endpoint: str
    certificate: Path  # the server's certificate (PEM), as node-opcua generated it
    pki: Path  # OUR pki_dir (client side): our certificate and trust stores


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeServer]:
    require_node_opcua()
    folder = tmp_path_factory.mktemp("node-opcua")
    pki = folder / "client-pki"
    cert, _key = await Pki(pki).ensure_own()  # our application certificate, made now
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "secure_server.js"),
        str(port),
        str(folder / "server-pki"),
        str(cert),
        cwd=NODE_DIR,
        env=dict(os.environ, OPCUA_PASSWORD=PASSWORD),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    drain: asyncio.Task[list[str]] | None = None
    try:
        line = await asyncio.wait_for(ready_line(proc), 30)
        assert line[:2] == ["LISTENING", str(port)], line
        drain = asyncio.create_task(ready_line(proc))  # node-opcua logs to stdout too
        yield NodeServer(f"opc.tcp://{HOST}:{port}", Path(line[2]), pki)
    finally:
        await stop(proc)
        if drain is not None:
            drain.cancel()


def make_source(server: NodeServer, out: Collector, **extra: Any) -> OpcUaSource:
    config = OpcUaSourceConfig.model_validate(
        {
            "name": NAME,
            "endpoint": server.endpoint,
            "publishing_interval": 0.1,
            "sampling_interval": 0.05,
            "timeout": 4.0,
            "reconnect_max": 0.5,
            "security_policy": "Basic256Sha256",
            "security_mode": "SignAndEncrypt",
            "identity": "username",
            "username": "operator",
            "password_env": PASSWORD_ENV,
            "pki_dir": str(server.pki),
            "tags": TAGS,
            **extra,
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(i + 1, f"x/y/{t.path}", t) for i, t in enumerate(config.tags)
    ]
    return opcua_source(config, bound, SourceContext(emit=out.emit, log=logging.getLogger(LOGGER)))


async def wait(cond: Callable[[], bool], limit: float = 10.0) -> None:
    for _ in range(int(limit / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"condition not met in {limit} s")


def good_values(out: Collector, tag: int) -> list[float]:
    return [v for t, v, q in out.rows() if t == tag and q == Quality.GOOD]


def der_of(pem_file: Path) -> bytes:
    return x509.load_pem_x509_certificate(pem_file.read_bytes()).public_bytes(Encoding.DER)


async def test_refused_until_trusted_then_reads_and_writes(
    node_server: NodeServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = Collector()
    source = make_source(node_server, out)
    pki = node_server.pki
    async with running_source(source):
        # 1. refused: node-opcua's certificate is not in our trust store yet
        rejected = pki / NAME / "rejected"
        await wait(lambda: rejected.is_dir() and any(rejected.iterdir()))
        await asyncio.sleep(0.5)
        assert not source.connected and not out.good()
        assert out.batches and all(
            (b.quality == Quality.BAD_COMMUNICATION_ERROR).all() for b in out.batches
        )
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("is not trusted" in m and f"isthmus certs trust {NAME}" in m for m in warnings)
        (stored,) = list(rejected.iterdir())
        assert stored.read_bytes() == der_of(node_server.certificate)  # the one it serves

        # 2. the operator trusts it; the source connects over SignAndEncrypt
        assert main(["certs", "trust", NAME, stored.stem[:12], "--pki-dir", str(pki)]) == 0
        await wait(lambda: source.connected and len(good_values(out, COUNTER)) >= 5)
        assert source._client.security_policy.URI.endswith("#Basic256Sha256")
        assert int(source._client.security_policy.Mode) == 3  # SignAndEncrypt
        package = json.loads((NODE_DIR / "package.json").read_text())
        assert source.server_info["product_name"].startswith("NodeOPCUA")
        assert source.server_info["manufacturer_name"] == "NodeOPCUA-Server"
        assert source.server_info["software_version"] == package["dependencies"]["node-opcua"]
        assert source.server_info["build_number"] == "interop"  # set by secure_server.js

        # 3. changing values, Good
        counts = good_values(out, COUNTER)
        assert counts == sorted(counts) and counts[-1] > counts[0]
        await wait(lambda: len(set(good_values(out, STATE))) >= 3)
        assert set(good_values(out, STATE)) <= {0.0, 1.0, 2.0, 3.0, 4.0}
        temps = good_values(out, TEMPERATURE)
        assert len(set(temps)) >= 2 and all(15.0 <= t <= 25.0 for t in temps)
        assert good_values(out, SETPOINT)[0] == 42.5 and good_values(out, MODE)[0] == 1.0

        # 4. typed writes with read-back: an int to a Double node, a float to an Int16
        await source.write("a/l/c/e/setpoint", 17)
        await source.write(MODE, 3.0)
        await wait(lambda: good_values(out, SETPOINT)[-1] == 17.0)
        await wait(lambda: good_values(out, MODE)[-1] == 3.0)
        with pytest.raises(OpcUaWriteError, match="not a whole number"):
            await source.write(MODE, 2.5)
        with pytest.raises(OpcUaWriteError, match="out of the Int16 range"):
            await source.write(MODE, 40000)
        with pytest.raises(OpcUaWriteError, match="not writable"):
            await source.write("a/l/c/e/counter", 1)
    assert (pki / NAME / "trusted" / stored.name).is_file()


@pytest.mark.parametrize("policy", ["Aes256_Sha256_RsaPss", "Aes128_Sha256_RsaOaep"])
async def test_other_policies_after_trusting_the_certificate_file(
    node_server: NodeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    # a fresh trust store, the server's certificate trusted up front from its file;
    # our own certificate is copied so node-opcua (which trusts only it) accepts us
    pki = tmp_path / "pki"
    (pki / "_own").mkdir(parents=True)
    for name in ("cert.der", "key.pem"):
        (pki / "_own" / name).write_bytes((node_server.pki / "_own" / name).read_bytes())
    assert main(["certs", "trust", NAME, str(node_server.certificate), "--pki-dir", str(pki)]) == 0
    server = NodeServer(node_server.endpoint, node_server.certificate, pki)
    out = Collector()
    source = make_source(server, out, security_policy=policy)
    async with running_source(source):
        await wait(lambda: len(set(good_values(out, COUNTER))) >= 3)
        assert source._client.security_policy.URI.endswith(f"#{policy}")
    assert not any((b.quality & 0x80000000).any() for b in out.batches)  # never Bad


async def test_wrong_password_or_no_security_never_connects(
    node_server: NodeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = tmp_path / "pki"
    (pki / "_own").mkdir(parents=True)
    for name in ("cert.der", "key.pem"):
        (pki / "_own" / name).write_bytes((node_server.pki / "_own" / name).read_bytes())
    der = der_of(node_server.certificate)
    trusted = pki / NAME / "trusted"
    trusted.mkdir(parents=True)
    (trusted / f"{thumbprint(der)}.der").write_bytes(der)
    server = NodeServer(node_server.endpoint, node_server.certificate, pki)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    for extra in (
        {},
        {"security_policy": "None", "security_mode": "None", "identity": "anonymous"},
    ):
        out = Collector()
        source = make_source(server, out, **extra)
        async with running_source(source):
            await wait(lambda: bool(out.batches))  # noqa: B023
            await asyncio.sleep(1.0)  # it keeps retrying: still nothing Good
            assert not source.connected and not out.good()
        assert all((b.quality == Quality.BAD_COMMUNICATION_ERROR).all() for b in out.batches)


async def test_node_opcua_refuses_a_client_certificate_it_does_not_trust(
    node_server: NodeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    pki = tmp_path / "pki"  # a fresh application certificate, unknown to node-opcua
    assert main(["certs", "trust", NAME, str(node_server.certificate), "--pki-dir", str(pki)]) == 0
    out = Collector()
    source = make_source(NodeServer(node_server.endpoint, node_server.certificate, pki), out)
    async with running_source(source):
        await wait(lambda: (pki / "_own" / "cert.der").is_file() and bool(out.batches))
        await asyncio.sleep(1.0)
        assert not source.connected and not out.good()
    assert all((b.quality == Quality.BAD_COMMUNICATION_ERROR).all() for b in out.batches)


# -- a node-opcua client against our simulator ------------------------------------------

_NODE_TYPES = {DataType.FLOAT64: "Double", DataType.INT32: "Int32", DataType.UINT32: "UInt32"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim_endpoint() -> AsyncIterator[str]:
    require_node_opcua()
    config = SimulatorConfig(seed=7, host=HOST, opcua_port=free_port(), modbus_port=free_port())
    ready = asyncio.Event()
    task = asyncio.create_task(run_simulator(config, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait([task, waiter], timeout=30, return_when="FIRST_COMPLETED")
    waiter.cancel()
    if task in done:
        task.result()
    assert ready.is_set(), "simulator not ready in 30 s"
    yield f"opc.tcp://{HOST}:{config.opcua_port}/"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_node_opcua_client_reads_the_simulator(sim_endpoint: str) -> None:
    async with Client(sim_endpoint, timeout=4) as client:  # a setpoint node-opcua must see
        await client.get_node("ns=2;s=Line1.Setpoints.LineSpeed").write_value(420.0)
    await asyncio.sleep(0.3)  # one simulator tick applies it
    total = "ns=2;s=Line1.Filler.TotalCount"
    temp = "ns=2;s=Line1.Filler.ProductTemperature"
    nodes = [v.node_id for v in OPCUA_VARIABLES]
    fill = "ns=2;s=Line1.Setpoints.FillVolume"
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "sim_client.js"),
        sim_endpoint,
        "3",
        *nodes,
        "--write",
        f"{fill}=505.5",
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            await stop(proc)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    (result,) = [x for x in stdout.decode().splitlines() if x.startswith("RESULT ")]
    got = json.loads(result.removeprefix("RESULT "))  # node-opcua logs to stdout too

    # browse: the simulator's namespace and folder tree, as its tables say
    assert got["namespaces"][2] == OPCUA_NAMESPACE_URI
    assert "Line1" in got["browse"]["Objects"]
    assert set(got["browse"]["Line1"]) == {
        f.split(".")[1] for f in opcua_folders() if f.count(".") == 1
    }
    for folder in ("Line1.Filler", "Line1.Setpoints"):
        expected = {v.browse_name for v in OPCUA_VARIABLES if v.folder == folder}
        assert expected <= set(got["browse"][folder])

    # read: every variable Good, with the documented type and within its range
    for var in OPCUA_VARIABLES:
        read = got["reads"][var.node_id]
        assert read["status"] == "Good", (var.node, read)
        assert read["dataType"] == _NODE_TYPES[var.data_type], (var.node, read)
        if var.range is not None:
            assert var.range[0] <= read["value"] <= var.range[1], (var.node, read)
    assert got["reads"]["ns=2;s=Line1.Setpoints.LineSpeed"]["value"] == 420.0
    assert got["reads"]["ns=2;s=Line1.Filler.State"]["value"] in {0, 1, 2, 3, 4}

    # subscribe: the counter only grows and moves, the temperature changes
    counts = got["changes"][total]
    assert counts == sorted(counts) and counts[-1] > counts[0], counts
    assert len(set(got["changes"][temp])) >= 2
    for var in OPCUA_VARIABLES:
        assert got["changes"][var.node_id], f"no notification for {var.node}"

    # write: node-opcua's write reaches the simulator (read back with asyncua)
    assert got["write"] == {"node": fill, "status": "Good"}
    assert FILL_VOLUME_LIMITS[0] <= 505.5 <= FILL_VOLUME_LIMITS[1]
    await asyncio.sleep(0.3)
    async with Client(sim_endpoint, timeout=4) as client:
        assert await client.get_node(fill).read_value() == 505.5
