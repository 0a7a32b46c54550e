"""velocity's own code for an archive (``velocity archive --include-code``): a wheel of the
exact velocity that is running, made offline.

The wheel is packed from the running package's own files (``velocity/``, every file but
bytecode caches) and the installed distribution's core metadata (``METADATA``,
``entry_points.txt``), with a ``WHEEL`` and a ``RECORD`` of sha256s made anew: what runs is
what is archived, also from an editable install of a source checkout, and no build backend or
package index is needed (``pip wheel --no-build-isolation`` would need the build backend the
project declares installed; offline it often is not). Entries are sorted and carry the sweep's
finish time, so the wheel, like the archive, does not depend on when it was made.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import time
import zipfile
from pathlib import Path

from velocity._version import __version__
from velocity.errors import InputError

__all__ = ["DISTRIBUTION", "velocity_wheel", "wheel_name"]

DISTRIBUTION = "velocity-fl"
_TAG = "py3-none-any"
_ZIP_EPOCH = 315532800  # 1980-01-01, the earliest time a zip entry can hold


def wheel_name(version: str = __version__) -> str:
    """``velocity_fl-<version>-py3-none-any.whl``."""
    return f"{DISTRIBUTION.replace('-', '_')}-{version}-{_TAG}.whl"


def _fail(reason: str) -> InputError:
    return InputError(f"--include-code: cannot make the wheel of velocity {__version__} ({reason})")


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _package_files() -> dict[str, bytes]:
    root = Path(__file__).resolve().parents[1]  # the velocity package folder
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root.parent)
        if path.is_dir() or "__pycache__" in relative.parts or path.suffix in (".pyc", ".pyo"):
            continue
        files[relative.as_posix()] = path.read_bytes()
    return files


def velocity_wheel(epoch: int) -> tuple[str, bytes]:
    """``(file name, bytes)`` of a wheel of the running velocity; ``epoch`` (seconds) is the
    time every entry carries."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise _fail(f"the {DISTRIBUTION} distribution is not installed") from None
    if dist.version != __version__:
        raise _fail(f"the installed {DISTRIBUTION} metadata says version {dist.version}")
    metadata = dist.read_text("METADATA")
    if not metadata:
        raise _fail(f"the installed {DISTRIBUTION} has no METADATA")
    info = f"{DISTRIBUTION.replace('-', '_')}-{__version__}.dist-info"
    contents = _package_files()
    contents[f"{info}/METADATA"] = metadata.encode("utf-8")
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        contents[f"{info}/entry_points.txt"] = entry_points.encode("utf-8")
    contents[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: velocity ({__version__})\nRoot-Is-Purelib: true\n"
        f"Tag: {_TAG}\n"
    ).encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name in sorted(contents):
        writer.writerow([name, _record_hash(contents[name]), len(contents[name])])
    writer.writerow([f"{info}/RECORD", "", ""])
    contents[f"{info}/RECORD"] = record.getvalue().encode()
    moment = time.gmtime(max(epoch, _ZIP_EPOCH))
    date_time = (moment[0], moment[1], moment[2], moment[3], moment[4], moment[5] - moment[5] % 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(contents):
            entry = zipfile.ZipInfo(name, date_time=date_time)
            entry.create_system = 3
            entry.external_attr = 0o100644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, contents[name], compresslevel=9)
    return wheel_name(), buffer.getvalue()
