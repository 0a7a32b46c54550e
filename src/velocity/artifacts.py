"""On-disk artifacts of runs and sweeps: atomic writes and exact, tool-neutral encodings.

Files are the interface: JSON (strict: non-finite floats are written as the strings "NaN",
"Infinity", "-Infinity") and CSV (floats as shortest round-trip repr, so reading gives back the
exact bits). Every writer goes through a temp file + rename, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "atomic_file",
    "decode_floats",
    "decode_floats_at",
    "dumps_json",
    "encode_floats",
    "format_csv_value",
    "parse_csv_value",
    "read_json",
    "read_rounds_csv",
    "rounds_csv_text",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_floats(value: Any) -> Any:
    """Replace non-finite floats by "NaN"/"Infinity"/"-Infinity" (strict JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): encode_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_floats(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return encode_floats(value.item())
    return value


def decode_floats(value: Any) -> Any:
    """Inverse of :func:`encode_floats` for metric values (strings "NaN"... back to floats)."""
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, Mapping):
        return {k: decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_floats(v) for v in value]
    return value


NumberPaths = Sequence[tuple[str, ...]]


def decode_floats_at(document: Any, paths: NumberPaths) -> Any:
    """:func:`decode_floats` applied only where a document holds numbers: at each path of keys
    (``"*"`` matches every list element or mapping value). Text elsewhere stays text, so a run
    named "NaN" stays a name."""
    if not paths:
        return document
    if any(not path for path in paths):
        return decode_floats(document)
    heads: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        heads.setdefault(path[0], []).append(path[1:])
    if isinstance(document, Mapping):
        out = dict(document)
        for key, value in document.items():
            rests = [*heads.get(str(key), []), *heads.get("*", [])]
            if rests:
                out[key] = decode_floats_at(value, rests)
        return out
    if isinstance(document, list) and "*" in heads:
        return [decode_floats_at(item, heads["*"]) for item in document]
    return document


def dumps_json(payload: Any) -> str:
    """Deterministic strict JSON: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(encode_floats(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle on a temp file beside ``path`` that replaces ``path`` on success.

    The data is fsynced before the rename and the file gets ordinary (umask) permissions; on
    error the temp file is removed and ``path`` is untouched. The folder must already exist.
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _naming(exc, target) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, target) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _naming(error: OSError, target: Path) -> OSError:
    """The same error, naming the file being written (a full disk fails a write() or fsync(),
    which name no file, or the temp file, which the user never asked for)."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(target))


def write_bytes_atomic(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically, creating its folder if needed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as handle:
        handle.write(payload)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, payload: Any) -> None:
    write_text_atomic(path, dumps_json(payload))


def read_json(path: str | Path, numbers: NumberPaths = ()) -> Any:
    """Read a JSON artifact, decoding the non-finite float strings at ``numbers`` (paths as in
    :func:`decode_floats_at`; ``((),)`` decodes the whole document, the default nothing)."""
    with Path(path).open(encoding="utf-8") as handle:
        return decode_floats_at(json.load(handle), numbers)


def format_csv_value(value: Any) -> str:
    """CSV cell: '' for None, shortest round-trip repr for floats ('nan', 'inf', '-inf')."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_csv_value(text: str) -> Any:
    """Inverse of :func:`format_csv_value`: int, float (exact bits), None, bool or the string."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def rounds_csv_text(rounds: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of per-round records, one row per round, ``columns`` in order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in rounds:
        writer.writerow([format_csv_value(record.get(c)) for c in columns])
    return buffer.getvalue()


def read_rounds_csv(path: str | Path) -> list[dict[str, Any]]:
    """Per-round records from a rounds.csv, values parsed back exactly."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return [{k: parse_csv_value(v) for k, v in row.items()} for row in reader]
