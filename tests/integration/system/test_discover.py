"""`isthmus discover` against the simulator: the written file passes `check` and runs
unchanged (build_runtime + pipeline), Good values reach the historian.  The CLI runs
in-process (a subprocess costs seconds of imports); test_cli covers the real command."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import pytest
import pytest_asyncio

from isthmus.app import build_runtime, start_pipeline, stop_pipeline
from isthmus.cli import load_config, main
from isthmus.model.config import SimulatorConfig
from isthmus.model.quality import Quality
from isthmus.sim.runner import run_simulator

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(15),
    pytest.mark.asyncio(loop_scope="module"),
]

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def endpoint() -> AsyncIterator[str]:
    config = SimulatorConfig(seed=7, host=HOST, opcua_port=free_port(), modbus_port=free_port())
    ready = asyncio.Event()
    task = asyncio.create_task(run_simulator(config, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    yield f"opc.tcp://{HOST}:{config.opcua_port}/"
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def isthmus(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI in-process (in a thread: it runs its own event loop), output captured."""
    code = await asyncio.to_thread(main, list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_discover_check_run(
    endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "plant.yaml"
    code, out = await isthmus(
        capsys, "discover", endpoint, "--output", str(target), "--name", "line1"
    )
    assert code == 0, out
    assert "discovered" in out
    text = target.read_text()
    assert "Line1/main/main/Setpoints/LineSpeed" in text
    assert 'unit: "bottles/min"' in text
    assert "writable: true" in text
    assert "range: [0, 600]" in text
    assert "i=2253" not in text  # the standard Server object is skipped

    code, out = await isthmus(capsys, "check", str(target))
    assert code == 0, out

    plant, sources, _ = load_config(str(target))
    assert [s.type for s in sources] == ["opcua"]
    assert len(sources[0].tags) >= 30
    rt = build_runtime(plant, sources, tmp_path / "data")
    await start_pipeline(rt)
    try:
        path = "my-company/my-site/Line1/main/main/Filler/Speed"
        tag_id = rt.store.tags()[path]
        for _ in range(60):
            await asyncio.sleep(0.1)
            last = rt.store.last([tag_id])
            if len(last) and int(last.quality[0]) == Quality.GOOD:
                break
        else:
            pytest.fail("no Good value of Filler/Speed reached the historian")
        ids = list(rt.store.tags().values())
        good = rt.store.last(ids)
        assert int((good.quality == Quality.GOOD).sum()) >= 30
    finally:
        await stop_pipeline(rt)


async def test_discover_refuses_unreachable_and_existing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = await isthmus(capsys, "discover", f"opc.tcp://{HOST}:{free_port()}/")
    assert code == 1
    assert "cannot connect" in out and "Traceback" not in out
    existing = tmp_path / "x.yaml"
    existing.write_text("keep")
    code, out = await isthmus(capsys, "discover", "opc.tcp://h:1/", "--output", str(existing))
    assert code == 1 and "exists" in out
    assert existing.read_text() == "keep"
