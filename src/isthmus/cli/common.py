"""What every command module shares: consoles, logging, loading a plant config, ports."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.logging import RichHandler

from isthmus.model.config import PlantConfig, SourceConfig
from isthmus.model.errors import IsthmusError

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
log = logging.getLogger("isthmus")

DEMO_CONFIG = "demo-plant.yaml"
DEFAULT_DATA_DIR = ".isthmus"


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )
    # The connectors report link problems themselves (one warning per outage); the
    # libraries' own tracebacks are only for --verbose.
    for noisy in ("asyncua", "pymodbus", "uvicorn.error", "httpx"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if not verbose else logging.INFO)


def demo_config_text() -> str:
    return resources.files("isthmus.examples").joinpath(DEMO_CONFIG).read_text()


def load_config(path: str | None) -> tuple[PlantConfig, list[SourceConfig], str]:
    """Load and validate a config file (the embedded demo plant when ``path`` is None)."""
    from isthmus.connectors.registry import default_connectors, source_models
    from isthmus.model.loader import load_plant_config

    if path is None:
        text, name = demo_config_text(), f"{DEMO_CONFIG} (embedded)"
    else:
        try:
            text, name = Path(path).read_text(encoding="utf-8"), path
        except OSError as exc:
            raise IsthmusError(f"{path}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise IsthmusError(f"{path}: not a UTF-8 text file") from None
    plant, sources = load_plant_config(text, name, source_models(default_connectors()))
    return plant, sources, text


def _replace_port(url: str, old: int, new: int) -> str:
    parts = urlsplit(url)
    if parts.port != old or parts.hostname is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{new}"))


def apply_sim_overrides(
    plant: PlantConfig,
    sources: list[SourceConfig],
    *,
    opcua_port: int | None,
    modbus_port: int | None,
    seed: int | None,
    http_port: int | None,
) -> tuple[PlantConfig, list[SourceConfig]]:
    """Point the demo's sources and simulator at the ports given on the command line."""
    sim = plant.simulator
    if sim is None:
        raise IsthmusError("this configuration has no 'simulator' section")
    new_sim = sim.model_copy(
        update={
            k: v
            for k, v in (("opcua_port", opcua_port), ("modbus_port", modbus_port), ("seed", seed))
            if v is not None
        }
    )
    updated: list[SourceConfig] = []
    for s in sources:
        data = s.model_dump()
        if s.type == "opcua":
            data["endpoint"] = _replace_port(data["endpoint"], sim.opcua_port, new_sim.opcua_port)
        elif s.type == "modbus" and data.get("port") == sim.modbus_port:
            data["port"] = new_sim.modbus_port
        updated.append(type(s).model_validate(data))
    api = plant.api.model_copy(update={"port": http_port}) if http_port else plant.api
    return plant.model_copy(update={"simulator": new_sim, "api": api}), updated


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return True
        time.sleep(0.1)
    return False


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def fmt_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
