"""Start the two-site company on this machine: see docs/edge-hub.md.

3 nats-server nodes (JetStream, one cluster) on 127.0.0.1:4222-4224, a throw-away
PostgreSQL cluster, the lyon and paris simulators, one edge per site, ``--hubs`` hubs,
each ``isthmus`` process with its own data directory under ``--data-dir``.  Prints the
hub's API URL and the admin login; Ctrl-C stops everything (hubs last).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.historian.pg_cluster import PgCluster, find_bin_dir  # noqa: E402
from tests.integration.nats.nats_server import NatsServer, wait_jetstream, wait_port  # noqa: E402

NATS_PORTS = (4222, 4223, 4224)
CLUSTER_PORTS = (6222, 6223, 6224)
SITES = {"lyon": "examples/two-sites.yaml", "paris": "examples/two-sites-paris.yaml"}
SIM_PORTS = {"lyon": (4840, 5020), "paris": (4841, 5021)}


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def shifted(path: Path, data: Path, offset: int) -> Path:
    """A copy of an example config with its NATS and simulator ports shifted."""
    text = path.read_text()
    for port in (*NATS_PORTS, *(p for pair in SIM_PORTS.values() for p in pair)):
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{port + offset}")
        text = text.replace(f"_port: {port}", f"_port: {port + offset}")
        text = text.replace(f"port: {port}\n", f"port: {port + offset}\n")
    out = data / path.name
    out.write_text(text)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=".isthmus-two-sites")
    ap.add_argument("--hubs", type=int, default=2)
    ap.add_argument("--http-port", type=int, default=8080, help="first hub; others follow")
    ap.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="shift the NATS (4222-4224, 6222-6224) and simulator (4840/5020, 4841/5021) "
        "ports when those are taken; the configs are then rewritten into --data-dir",
    )
    args = ap.parse_args()
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    configs = {**SITES, "hub": "examples/two-sites-hub.yaml"}
    if args.port_offset:
        configs = {
            name: str(shifted(ROOT / path, data, args.port_offset))
            for name, path in configs.items()
        }
    off = args.port_offset
    nats_ports = [p + off for p in NATS_PORTS]
    cluster_ports = [p + off for p in CLUSTER_PORTS]
    sim_ports = {site: (a + off, b + off) for site, (a, b) in SIM_PORTS.items()}
    hub_ports = [args.http_port + i for i in range(args.hubs)]
    edge_ports = {site: args.http_port + args.hubs + i for i, site in enumerate(SITES)}
    wanted = [*nats_ports, *cluster_ports, *hub_ports, *edge_ports.values()]
    wanted += [p for ports in sim_ports.values() for p in ports]
    busy = [p for p in wanted if not port_free(p)]
    if busy:
        print(f"ports in use: {busy}: pass --port-offset and/or --http-port", file=sys.stderr)
        return 2
    bin_dir = find_bin_dir()
    if bin_dir is None:
        print("PostgreSQL server binaries not found (apt install postgresql)", file=sys.stderr)
        return 2

    password = os.environ.get("ISTHMUS_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    servers: list[NatsServer] = []
    pg = PgCluster(bin_dir, durable=True)
    python = sys.executable

    def spawn(name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = (data / f"{name}.log").open("ab")
        procs.append((name, subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "ISTHMUS_ADMIN_PASSWORD": password, **(env or {})},
        )))  # fmt: skip

    try:
        print("starting 3 NATS nodes (JetStream cluster)...")
        for i, (port, cport) in enumerate(zip(nats_ports, cluster_ports, strict=True)):
            routes = [p for p in cluster_ports if p != cport]
            servers.append(
                NatsServer(data / "nats", f"n{i + 1}", port=port, cluster_port=cport, routes=routes)
            )
        for server in servers:
            server.start()
        wait_jetstream([s.url for s in servers], timeout=60, replicas=3)
        print("starting PostgreSQL...")
        pg.start()
        dsn = pg.create_database("isthmus")
        print("starting the simulators and edges...")
        for site in SITES:
            spawn(f"sim-{site}", [python, "-m", "isthmus", "sim", configs[site]])
        for site in SITES:
            for port in sim_ports[site]:
                if not wait_port(port, 60):
                    raise RuntimeError(f"simulator {site} did not listen on {port}")
        for site in SITES:
            spawn(f"edge-{site}", [
                python, "-m", "isthmus", "run", configs[site], "--role", "edge",
                "--data-dir", str(data / f"edge-{site}"), "--http-port", str(edge_ports[site]),
            ])  # fmt: skip
        for i, port in enumerate(hub_ports):
            spawn(f"hub{i + 1}", [
                python, "-m", "isthmus", "run", configs["hub"], "--role", "hub",
                "--data-dir", str(data / f"hub{i + 1}"), "--http-port", str(port),
            ], env={"ISTHMUS_PG_DSN": dsn})  # fmt: skip
        for port in [*edge_ports.values(), *hub_ports]:
            if not wait_port(port, 90):
                raise RuntimeError(f"an isthmus process did not listen on {port}: see {data}/*.log")
        print("──────────────────────── Isthmus two sites ────────────────────────")
        print(f"  Hub API and control tower: http://127.0.0.1:{hub_ports[0]}"
              + "".join(f"  (also :{p})" for p in hub_ports[1:]))  # fmt: skip
        print(f"  Login: admin / {password}")
        for site, port in edge_ports.items():
            print(f"  Edge {site}: http://127.0.0.1:{port}")
        print(f"  NATS: {', '.join(s.url for s in servers)}   PostgreSQL: {dsn}")
        print(f"  Logs in {data}.  Ctrl-C stops everything.")
        stop = False

        def on_signal(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"{name} exited ({proc.returncode}); see {data}/{name}.log")
                    stop = True
            time.sleep(0.5)
    finally:
        # Sources first (edges, then simulators), hubs last so they drain what is in flight.
        order = sorted(procs, key=lambda p: (p[0].startswith("hub"), p[0].startswith("sim")))
        for _, proc in order:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for server in servers:
            server.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
