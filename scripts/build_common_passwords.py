"""Rebuild ``src/isthmus/security/common-passwords.txt.gz`` (the password policy's list).

The list is the union, lower-cased, de-duplicated and in this order, of:

1. Django 5.2's ``django/contrib/auth/common-passwords.txt.gz`` (19,646 passwords from
   Royce Williams' list; BSD-3-Clause, © Django Software Foundation);
2. the ``passwords`` frequency list of the ``zxcvbn`` 4.5.0 Python package (30,000
   passwords from Mark Burnett's/xato list; MIT, © 2016 Daniel Wolf);
3. :data:`SUPPLEMENT` below, a short list of long passwords that plant systems see and
   the leak-based lists above lack (written by hand for Isthmus).

Usage (the packages come from PyPI; nothing else is downloaded)::

    pip download --no-deps Django==5.2.19 zxcvbn==4.5.0 -d /tmp/pw
    python scripts/build_common_passwords.py /tmp/pw
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src/isthmus/security/common-passwords.txt.gz"

SUPPLEMENT = [
    "password1234",
    "password12345",
    "password123456",
    "password@123",
    "password123!",
    "passw0rd1234",
    "administrator",
    "administrator1",
    "administrator123",
    "admin1234567",
    "admin@123456",
    "adminadmin123",
    "changeme1234",
    "changeme123456",
    "changemenow!",
    "welcome12345",
    "welcome123456",
    "welcome@1234",
    "letmein12345",
    "qwerty123456!",
    "qwertyuiop123",
    "qwertyuiop12",
    "1qaz2wsx3edc4rfv",
    "qazwsxedcrfvtgb",
    "iloveyou1234",
    "trustno1trustno1",
    "passwordpassword",
    "123456789012",
    "1234567890123",
    "12345678901234",
    "abcdefghijkl",
    "abcdefghijklmnop",
    "abc123abc123",
    "aaaaaaaaaaaa",
    "111111111111",
    "000000000000",
    "operator1234",
    "operator12345",
    "engineer1234",
    "supervisor123",
    "supervisor1234",
    "maintenance1",
    "maintenance123",
    "scada1234567",
    "siemens12345",
    "siemens123456",
    "factory12345",
    "production123",
    "summer2024!!",
    "winter2024!!",
    "spring2024!!",
    "autumn2024!!",
    "summer2025!!",
    "winter2025!!",
    "correcthorsebatterystaple",
    "isthmus12345",
    "isthmus123456",
    "isthmusisthmus",
]


def _member(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(name)


def main(folder: str) -> int:
    src = Path(folder)
    django = next(src.glob("[Dd]jango-5.2*.whl"))
    zx = next(src.glob("zxcvbn-4.5.0*.whl"))
    first = gzip.decompress(_member(django, "django/contrib/auth/common-passwords.txt.gz"))
    spec_src = _member(zx, "zxcvbn/frequency_lists.py").decode()
    spec = importlib.util.spec_from_loader("frequency_lists", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(spec_src, "frequency_lists.py", "exec"), module.__dict__)
    second: list[str] = module.FREQUENCY_LISTS["passwords"]
    words = [*first.decode().split(), *second, *SUPPLEMENT]
    unique = dict.fromkeys(w.strip().lower() for w in words if w.strip())
    OUT.write_bytes(gzip.compress(("\n".join(unique) + "\n").encode(), 9, mtime=0))
    print(f"{len(unique)} passwords -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
