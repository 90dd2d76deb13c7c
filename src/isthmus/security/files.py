"""Private files of the data directory: atomic writes with mode 0600, the server secret."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from isthmus.security.errors import IdentityError

SECRET_FILE = "secret.key"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to ``path`` with mode 0600 (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_create_secret(data_dir: Path) -> bytes:
    """The server secret (signs access tokens): 32 random bytes created once in
    ``secret.key``."""
    path = data_dir / SECRET_FILE
    if path.exists():
        key = path.read_bytes()
        if len(key) < 32:
            raise IdentityError(f"{path} holds {len(key)} bytes; a key needs at least 32")
        return key
    key = secrets.token_bytes(32)
    write_private(path, key)
    return key
