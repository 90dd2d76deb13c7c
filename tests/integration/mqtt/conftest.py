"""A private Mosquitto broker per test, on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.mqtt.certs import TlsFiles, make_tls_files
from tests.support import free_port, require_binary

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


class Broker:
    """A mosquitto process with its own config file; can be stopped and started again
    on the same port (an outage)."""

    def __init__(
        self,
        tmp: Path,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self._tmp = tmp
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [f"listener {self.port} 127.0.0.1", "persistence false"]
        if tls is not None:  # mutual TLS: the client must show a certificate of our CA
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                "require_certificate true",
            ]
        if os.geteuid() == 0:
            lines.append("user root")  # do not drop to 'mosquitto': it could not read tmp files
        if users:
            passwd = tmp / "passwd"
            passwd.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(passwd), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
            if acl is not None:
                (tmp / "acl").write_text(acl)
                lines.append(f"acl_file {tmp / 'acl'}")
        else:
            lines.append("allow_anonymous true")
        self.config = tmp / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = tmp / "mosquitto.log"
        self.tls: TlsFiles | None = tls

    def start(self, timeout: float = 5.0) -> None:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"mosquitto exited:\n{self.log.read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"mosquitto did not listen:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    require_binary(MOSQUITTO, "MQTT tests run against a real Mosquitto broker")
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


AUTH_USER = "isthmus"
AUTH_PASSWORD = "s3cret-for-tests"
WRITER_USER = "writer"


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    require_binary(MOSQUITTO, "MQTT tests run against a real Mosquitto broker")
    require_binary(MOSQUITTO_PASSWD, "the auth test writes a mosquitto password file")
    b = Broker(tmp_path, users={AUTH_USER: AUTH_PASSWORD})
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    """Authenticated; AUTH_USER may read ``sensors/#`` only, WRITER_USER may write all."""
    require_binary(MOSQUITTO, "MQTT tests run against a real Mosquitto broker")
    require_binary(MOSQUITTO_PASSWD, "the ACL test writes a mosquitto password file")
    acl = f"user {AUTH_USER}\ntopic read sensors/#\nuser {WRITER_USER}\ntopic write #\n"
    b = Broker(tmp_path, users={AUTH_USER: AUTH_PASSWORD, WRITER_USER: AUTH_PASSWORD}, acl=acl)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Broker]:
    """TLS only, with a client certificate required; ``broker.tls`` holds the files."""
    require_binary(MOSQUITTO, "MQTT tests run against a real Mosquitto broker")
    files = make_tls_files(tmp_path)
    b = Broker(tmp_path, tls=files)
    b.start()
    try:
        yield b
    finally:
        b.stop()
