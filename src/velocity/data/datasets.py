"""Datasets: scikit-learn's bundled sets, Synthetic(alpha, beta) of Li et al., and user data.

Every loader returns raw arrays; :func:`load_dataset` applies the run's fixed stratified
train/test split (from the seed tree) and standardizes features with train-only statistics.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import io
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from velocity.datafiles import open_user_file, reading
from velocity.errors import InputError, SpecError
from velocity.limits import Estimate, check_memory
from velocity.registry import REQUIRED, Param, Registry
from velocity.seeds import child_rng

__all__ = [
    "DATASETS",
    "FederatedDataset",
    "RawData",
    "describe_datasets",
    "load_dataset",
    "scaled_float32",
    "scaling",
    "split_rows",
    "stratified_split",
    "synthetic_li2020",
]


@dataclass(frozen=True)
class RawData:
    """Features, integer labels 0..C-1 and, for naturally federated data, each sample's client.

    ``owned``: the loader made these arrays for this call only, so :func:`load_dataset` may
    scale and split ``X`` in place (no second copy of the features).
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None
    num_classes: int | None = None
    sample_shape: tuple[int, ...] | None = None  # images: (C, H, W) of each flat row of X
    owned: bool = False


@dataclass(frozen=True)
class FederatedDataset:
    """A split, standardized dataset ready for partitioning (float32 features, int64 labels)."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    groups_train: np.ndarray | None = None
    sample_shape: tuple[int, ...] | None = None

    @property
    def num_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """A sample's shape: ``(C, H, W)`` for images (rows of X are flattened images),
        ``(features,)`` for tables."""
        return self.sample_shape or (self.num_features,)


Loader = Callable[..., RawData]
DATASETS: Registry[Loader] = Registry("dataset")

_TEST_FRACTION = Param(
    "test_fraction",
    float,
    0.2,
    "share of samples held out for testing",
    low=0,
    high=1,
    low_open=True,
    high_open=True,
)


SCALINGS = ("standardize", "unit", "raw")
_SCALE = Param(
    "scale",
    str,
    "standardize",
    "feature scaling from training statistics: 'standardize' (zero mean, unit variance), "
    "'unit' (divided by the largest absolute value: digits' 0..16 become 0..1, the peers' "
    "preprocessing) or 'raw' (as loaded)",
    choices=SCALINGS,
    omit_default=True,  # specs written before the option keep their canonical form
)
_BLOCK_ROWS = 1 << 16
"""Rows per block when data is generated, scaled or split: bounds every temporary."""


# scikit-learn ships these tables as plain files (last column = label); reading them directly
# avoids importing scikit-learn (~2.5 s) in every run and sweep worker. The loaded arrays are
# tested equal to scikit-learn's own loaders.
_SKLEARN_FILES = {
    "load_digits": ("digits.csv.gz", 0),
    "load_wine": ("wine_data.csv", 1),
    "load_breast_cancer": ("breast_cancer.csv", 1),
}


def _sklearn_data_dir() -> Path | None:
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data"


def _sklearn_loader(function_name: str) -> Loader:
    def load(**_: Any) -> RawData:
        file_name, header_rows = _SKLEARN_FILES[function_name]
        folder = _sklearn_data_dir()
        if folder is not None and (folder / file_name).is_file():
            table = np.loadtxt(folder / file_name, delimiter=",", skiprows=header_rows)
            return RawData(X=table[:, :-1], y=table[:, -1].astype(np.int64))
        datasets = importlib.import_module("sklearn.datasets")  # layout changed: ask sklearn
        bunch = getattr(datasets, function_name)()
        return RawData(X=np.asarray(bunch.data, dtype=np.float64), y=np.asarray(bunch.target))

    load.__doc__ = f"scikit-learn's bundled {function_name[5:]} dataset."
    return load


for _name, _fn, _summary, _shape in (
    (
        "digits",
        "load_digits",
        "8x8 handwritten digits: 1797 samples, 64 features, 10 classes",
        (1797, 64, 10),
    ),
    (
        "breast_cancer",
        "load_breast_cancer",
        "Wisconsin breast cancer: 569 x 30, 2 classes",
        (569, 30, 2),
    ),
    ("wine", "load_wine", "Wine recognition: 178 samples, 13 features, 3 classes", (178, 13, 3)),
):
    # ``shape`` (samples, features, classes) lets a run's memory be estimated before loading.
    DATASETS.register(
        _name, params=(_TEST_FRACTION, _SCALE), summary=_summary, paper="scikit-learn", shape=_shape
    )(_sklearn_loader(_fn))


def synthetic_li2020(
    alpha: float,
    beta: float,
    num_clients: int,
    rng: np.random.Generator,
    *,
    num_features: int = 60,
    num_classes: int = 10,
    max_per_client: int | None = None,
) -> RawData:
    """Synthetic(alpha, beta) of Li et al., "Federated Optimization in Heterogeneous Networks".

    Client k: u_k ~ N(0, alpha^2), B_k ~ N(0, beta^2) (alpha and beta are standard deviations,
    as in the paper's code, whose draws are normal(0, alpha)); W_k, b_k ~ N(u_k, 1) (model
    shift); v_k ~ N(B_k, 1) per feature (feature shift); x ~ N(v_k, diag(j^-1.2));
    y = argmax(W_k x + b_k); client sizes lognormal(4, 2) + 50 (power law), as in the paper's code.

    Drawn for all clients at once (features in float32, written straight into the result in
    blocks of rows): memory stays close to the data's own size. The values do not depend on
    the block size (one stream, drawn in order).
    """
    sizes = rng.lognormal(4.0, 2.0, num_clients).astype(np.int64) + 50
    if max_per_client is not None:
        sizes = np.minimum(sizes, max_per_client)
    scale = (np.arange(1, num_features + 1, dtype=np.float64) ** -0.6).astype(np.float32)
    u = rng.normal(0.0, alpha, num_clients)
    b_shift = rng.normal(0.0, beta, num_clients)
    W = (rng.standard_normal((num_clients, num_features, num_classes)) + u[:, None, None]).astype(
        np.float32
    )
    b = (rng.standard_normal((num_clients, num_classes)) + u[:, None]).astype(np.float32)
    v = (rng.standard_normal((num_clients, num_features)) + b_shift[:, None]).astype(np.float32)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    X = np.empty((int(ends[-1]) if num_clients else 0, num_features), dtype=np.float32)
    y = np.empty(len(X), dtype=np.int64)
    groups = np.repeat(np.arange(num_clients, dtype=np.int64), sizes)
    for first, last in _client_blocks(ends, _BLOCK_ROWS):
        rows = slice(int(starts[first]), int(ends[last - 1]))
        block = X[rows]
        rng.standard_normal(out=block, dtype=np.float32)
        block *= scale
        for k in range(first, last):  # per client: a broadcast add, one (n_k, f) @ (f, C)
            x = X[starts[k] : ends[k]]
            x += v[k]
            y[starts[k] : ends[k]] = np.argmax(x @ W[k] + b[k], axis=1)
    return RawData(X=X, y=y, groups=groups, num_classes=num_classes, owned=True)


def _client_blocks(ends: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Consecutive client ranges ``[first, last)`` of about ``rows`` rows each (at least one
    client per range)."""
    blocks, first = [], 0
    while first < len(ends):
        done = int(ends[first - 1]) if first else 0
        last = max(int(np.searchsorted(ends, done + rows, side="right")), first + 1)
        blocks.append((first, min(last, len(ends))))
        first = last
    return blocks


@DATASETS.register(
    "synthetic",
    params=(
        Param("alpha", float, 1.0, "model heterogeneity (variance of u_k)", low=0),
        Param("beta", float, 1.0, "feature heterogeneity (variance of B_k)", low=0),
        Param("max_per_client", int, 2000, "cap on a client's samples", low=1, nullable=True),
        _TEST_FRACTION,
        _SCALE,
    ),
    summary=(
        "Synthetic(alpha, beta): generated per client, each from its own model (alpha) and "
        "feature shift (beta); 60 features, 10 classes; partition 'natural' keeps these clients"
    ),
    paper="Li et al., Federated Optimization in Heterogeneous Networks, MLSys 2020",
    natural=True,
)
def _load_synthetic(
    *, alpha: float, beta: float, max_per_client: int | None, num_clients: int, seed: int, **_: Any
) -> RawData:
    rng = child_rng(seed, "dataset", "synthetic")
    return synthetic_li2020(alpha, beta, num_clients, rng, max_per_client=max_per_client)


def _labels_to_int(y: np.ndarray, source: str) -> np.ndarray:
    if y.ndim != 1:
        raise InputError(f"labels must be one-dimensional, got shape {y.shape}", source=source)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise InputError("labels contain NaN or infinite values", source=source)
    if y.dtype.kind == "c":
        raise InputError("labels must not be complex numbers", source=source)
    _, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64)


def _features(X: np.ndarray, source: str) -> np.ndarray:
    raw = np.asarray(X)
    if raw.dtype.kind not in "biuf":
        raise InputError(f"features must be real numbers, got dtype {raw.dtype}", source=source)
    X = raw.astype(np.float64, copy=False)  # no second copy of a float64 table
    if X.ndim == 0 or len(X) == 0:
        raise InputError("features hold no samples", source=source)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim > 2:
        X = X.reshape(len(X), -1)
    if not np.all(np.isfinite(X)):
        raise InputError("features contain NaN or infinite values", source=source)
    return X


@DATASETS.register(
    "npz",
    params=(
        Param("path", str, doc="a .npz file holding arrays X (samples x features) and y"),
        Param("x_key", str, "X", "name of the feature array"),
        Param("y_key", str, "y", "name of the label array"),
        _TEST_FRACTION,
        _SCALE,
    ),
    summary="A local NumPy .npz file with arrays X and y",
    user_data=True,
    user_files=("path",),
)
def _load_npz(*, path: str, x_key: str, y_key: str, **_: Any) -> RawData:
    with open_user_file(path) as handle:
        content = handle.read()
    try:
        loaded = np.load(io.BytesIO(content), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise InputError("not an .npz archive (a single .npy array?)", source=path)
        with loaded as data:
            missing = [k for k in (x_key, y_key) if k not in data.files]
            if missing:
                raise InputError(
                    f"array '{missing[0]}' not in file; it holds {', '.join(data.files)}",
                    source=path,
                )
            X, y = data[x_key], data[y_key]
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"not a readable .npz file ({exc})", source=path) from None
    X = _features(X, path)
    if np.ndim(y) != 1 or len(X) != len(y):
        raise InputError(f"X has {len(X)} rows but y has shape {np.shape(y)}", source=path)
    return RawData(X=X, y=_labels_to_int(np.asarray(y), path))


MAX_CLASSES = 100_000
"""More distinct labels than this in a user file is refused (a continuous column as label?)."""

_CSV_CHUNK_ROWS = 65_536
_ROW_IN_MESSAGE = re.compile(r"at row (\d+)")


def _csv_problem(exc: Exception, first_line: int) -> str:
    """numpy's parse error with its chunk-relative row turned into the file's line number."""
    text = str(exc).split("; use `usecols`")[0]
    return _ROW_IN_MESSAGE.sub(lambda m: f"on line {first_line + int(m.group(1))}", text)


class _LabelCodes:
    """Label strings -> class codes, chunk by chunk; codes follow the sorted label strings."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.ids: dict[str, int] = {}
        self.chunks: list[np.ndarray] = []

    def add(self, labels: np.ndarray, first_line: int) -> None:
        uniq, inverse = np.unique(labels, return_inverse=True)
        ids = []
        for value in uniq.tolist():
            if value not in self.ids:
                self._check(value, labels, first_line)
                self.ids[value] = len(self.ids)
            ids.append(self.ids[value])
        if len(self.ids) > MAX_CLASSES:
            raise InputError(
                f"more than {MAX_CLASSES} distinct labels (is the label column continuous?)",
                source=self.source,
            )
        self.chunks.append(np.asarray(ids, dtype=np.int64)[inverse.reshape(-1)])

    def _check(self, value: str, labels: np.ndarray, first_line: int) -> None:
        problem = None
        if not value.strip():
            problem = "an empty label"
        else:
            try:
                number = float(value)
            except ValueError:
                number = 0.0
            if not np.isfinite(number):
                problem = f"the label {value!r} (NaN or infinite)"
        if problem is not None:
            line = first_line + int(np.flatnonzero(labels == value)[0])
            raise InputError(
                f"line {line} has {problem}; every row needs a class", source=self.source
            )

    def codes(self) -> np.ndarray:
        order = sorted(self.ids)  # the same order np.unique gives the label strings
        remap = np.empty(len(order), dtype=np.int64)
        for code, value in enumerate(order):
            remap[self.ids[value]] = code
        return remap[np.concatenate(self.chunks)]


def _csv_header(text: io.TextIOBase, label: str, path: str) -> tuple[list[str], int]:
    first = text.readline()
    if not first.strip():
        raise InputError("needs a header row and at least one data row", source=path)
    header = next(csv.reader([first]))
    if label not in header:
        raise InputError(f"no label column '{label}'; columns: {', '.join(header)}", source=path)
    if len(header) < 2:
        raise InputError(
            f"no feature columns: the header holds only the label column '{label}'", source=path
        )
    return header, header.index(label)


def _parse_csv(text: io.TextIOBase, label: str, path: str) -> RawData:
    header, col = _csv_header(text, label, path)
    features = [j for j in range(len(header)) if j != col]
    commas = len(header) - 1
    options: dict[str, Any] = {"delimiter": ",", "quotechar": '"', "comments": None}
    labels = _LabelCodes(path)
    blocks: list[np.ndarray] = []
    rows, first_line = 0, 2
    while True:
        lines = list(itertools.islice(text, _CSV_CHUNK_ROWS))
        if not lines:
            break
        for offset, line in enumerate(lines):
            if '"' not in line and line.count(",") != commas:
                raise InputError(
                    f"line {first_line + offset} has a different number of fields", source=path
                )
        try:
            block = np.loadtxt(lines, usecols=features, dtype=np.float64, ndmin=2, **options)
            names = np.loadtxt(lines, usecols=[col], dtype=str, ndmin=1, **options)
        except ValueError as exc:
            raise InputError(
                f"feature columns must be numeric ({_csv_problem(exc, first_line)})", source=path
            ) from None
        labels.add(names, first_line)
        blocks.append(block)
        rows += len(block)
        first_line += len(lines)
        # Refused while streaming: the features alone would not fit (plus later copies).
        check_memory([Estimate("dataset", 3 * rows * len(features) * 8, f"{rows}+ rows of {path}")])
    if rows == 0:
        raise InputError("needs a header row and at least one data row", source=path)
    X = np.empty((rows, len(features)), dtype=np.float64)
    start = 0
    while blocks:  # copy block by block, freeing each: never two copies of the features
        block = blocks.pop(0)
        X[start : start + len(block)] = block
        start += len(block)
    return RawData(X=_features(X, path), y=labels.codes())


@DATASETS.register(
    "csv",
    params=(
        Param("path", str, doc="a CSV file with a header row; numeric feature columns"),
        Param("label", str, "label", "name of the label column"),
        _TEST_FRACTION,
        _SCALE,
    ),
    summary="A local CSV file (header row, numeric features, one label column)",
    user_data=True,
    user_files=("path",),
)
def _load_csv(*, path: str, label: str, **_: Any) -> RawData:
    """Streamed in blocks of rows through numpy's C parser (``numpy.loadtxt``)."""
    with open_user_file(path) as handle:
        buffered = io.BufferedReader(handle, 1 << 20)
        text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")
        try:
            return _parse_csv(text, label, path)
        except UnicodeDecodeError:
            raise InputError("not a UTF-8 text file", source=path) from None
        except csv.Error as exc:
            raise InputError(f"malformed CSV ({exc})", source=path) from None
        finally:
            text.detach()  # the hashing reader stays open: its digest is checked after
            buffered.detach()


@DATASETS.register(
    "hf",
    params=(
        Param("name", str, "", "Hugging Face dataset name (downloads unless cached)"),
        Param("path", str, "", "a dataset saved with save_to_disk (offline)"),
        Param("split", str, "train", "which split to load"),
        Param("label", str, "label", "label column"),
        Param("features", str, "", "feature columns joined by '+' (default: all but the label)"),
        _TEST_FRACTION,
        _SCALE,
    ),
    summary="A Hugging Face dataset by name or saved folder (needs the 'hf' extra)",
    paper="Hugging Face datasets",
    user_data=True,
)
def _load_hf(*, name: str, path: str, split: str, label: str, features: str, **_: Any) -> RawData:
    if bool(name) == bool(path):
        raise SpecError("dataset 'hf': give exactly one of 'name' or 'path'")
    try:
        hf = importlib.import_module("datasets")
    except ImportError:
        raise InputError(
            "dataset 'hf' needs the Hugging Face 'datasets' package: pip install 'velocity-fl[hf]'"
        ) from None
    source = path or name
    if path and not Path(path).exists():
        raise InputError("saved dataset folder not found", source=path)
    try:
        loaded = hf.load_from_disk(path) if path else hf.load_dataset(name, split=split)
    except Exception as exc:  # the library raises many types: missing files, no network, ...
        raise InputError(
            f"cannot load Hugging Face dataset ({type(exc).__name__}: {exc})", source=source
        ) from None
    if isinstance(loaded.column_names, dict):  # a DatasetDict saved to disk: pick the split
        if split not in loaded:
            raise InputError(f"no split '{split}'; splits: {', '.join(loaded)}", source=source)
        loaded = loaded[split]
    columns = list(loaded.column_names)
    if label not in columns:
        raise InputError(f"no label column '{label}'; columns: {', '.join(columns)}", source=source)
    wanted = features.split("+") if features else [c for c in columns if c != label]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise InputError(f"no feature column '{missing[0]}'", source=source)
    table = loaded.with_format("numpy")
    parts = []
    for column in wanted:
        values = np.asarray(table[column])
        if values.dtype.kind not in "biuf":
            raise InputError(f"feature column '{column}' is not numeric", source=source)
        parts.append(values.astype(np.float64).reshape(len(loaded), -1))
    return RawData(
        X=_features(np.concatenate(parts, axis=1), source),
        y=_labels_to_int(np.asarray(table[label]), source),
    )


def stratified_split(
    strata: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices: each stratum gives round(test_fraction * size) to test."""
    order = rng.permutation(len(strata))
    by_stratum = order[np.argsort(strata[order], kind="stable")]
    _, starts, counts = np.unique(strata[by_stratum], return_index=True, return_counts=True)
    n_test = np.floor(counts * test_fraction + 0.5).astype(np.int64)
    n_test = np.minimum(n_test, counts - 1)  # keep at least one training sample per stratum
    position = np.arange(len(strata)) - np.repeat(starts, counts)
    is_test = position < np.repeat(n_test, counts)
    return np.sort(by_stratum[~is_test]), np.sort(by_stratum[is_test])


def load_dataset(
    spec: str | Mapping[str, Any],
    *,
    seed: int,
    num_clients: int = 1,
    data_files: Sequence[Mapping[str, str]] = (),
) -> FederatedDataset:
    """Load, split (stratified, from the seed tree) and scale (train statistics; the dataset's
    ``scale`` parameter, standardized by default) a dataset, as float32.

    ``data_files`` are the run's records of the user files the dataset reads
    (``{"path", "sha256"}``): each file is read from its provided copy or its path and must
    have the recorded sha256.
    """
    entry, params = DATASETS.resolve(spec)
    test_fraction = params.pop("test_fraction")
    scale = params.pop("scale", "standardize")  # a plug-in dataset may not declare it
    with reading(data_files):
        raw = entry.obj(**params, num_clients=num_clients, seed=seed)
    y = raw.y.astype(np.int64, copy=False)
    num_classes = raw.num_classes or int(y.max()) + 1
    if num_classes < 2:
        raise InputError(f"dataset '{entry.name}' has a single class; need at least two")
    strata = y if raw.groups is None else raw.groups * num_classes + y
    train, test = stratified_split(strata, test_fraction, child_rng(seed, "split"))
    del strata
    if len(test) == 0:
        raise InputError(f"dataset '{entry.name}' is too small for a test split")
    shift, divisor = scaling(raw.X, train, scale)
    X = scaled_float32(raw.X, shift, divisor, in_place=raw.owned)
    X_train, X_test = split_rows(X, train, test)
    return FederatedDataset(
        name=entry.name,
        X_train=X_train,
        y_train=y[train],
        X_test=X_test,
        y_test=y[test],
        num_classes=num_classes,
        groups_train=None if raw.groups is None else raw.groups[train],
        sample_shape=raw.sample_shape,
    )


def scaling(X: np.ndarray, rows: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, divisor)`` float64 per feature from the training ``rows`` of ``X``: features
    become ``(X - shift) / divisor``. Block by block (no copy of the training rows); one block
    gives exactly numpy's ``mean``/``std`` of ``X[rows]``."""
    features = X.shape[1]
    if scale == "raw":
        return np.zeros(features), np.ones(features)
    if scale == "unit":
        peak = max((float(np.abs(X[b]).max()) for b in _row_blocks(rows)), default=0.0)
        return np.zeros(features), np.full(features, peak if peak > 0 else 1.0)
    if len(rows) <= _BLOCK_ROWS:
        sub = X[rows]
        mean, sd = sub.mean(axis=0, dtype=np.float64), sub.std(axis=0, dtype=np.float64)
    else:
        total = np.zeros(features)
        for block in _row_blocks(rows):
            total += X[block].sum(axis=0, dtype=np.float64)
        mean = total / len(rows)
        squares = np.zeros(features)
        for block in _row_blocks(rows):
            squares += np.square(X[block] - mean).sum(axis=0)
        sd = np.sqrt(squares / len(rows))
    sd[sd == 0] = 1.0
    return mean, sd


def scaled_float32(
    X: np.ndarray, shift: np.ndarray, divisor: np.ndarray, *, in_place: bool = False
) -> np.ndarray:
    """``((X - shift) / divisor)`` as float32, computed in float64 block by block (the same
    arithmetic as on the whole array at once). ``in_place`` (``X`` float32 and the caller's
    to overwrite): written over ``X`` itself, no second copy."""
    if in_place and X.dtype == np.float32 and X.flags.c_contiguous and X.flags.writeable:
        out = X
    else:
        out = np.empty(X.shape, dtype=np.float32)
    for start in range(0, len(X), _BLOCK_ROWS):
        block = slice(start, start + _BLOCK_ROWS)
        values = X[block] - shift  # float64
        values /= divisor
        out[block] = values
    return out


def split_rows(X: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(X[train], X[test])`` of a float32 array this call may overwrite, with sorted
    ``train``: the test rows are copied out, then the training rows are moved to the front of
    ``X`` in place and the rest of it released (one copy of the features at any time, plus
    the test rows)."""
    X_test = np.ascontiguousarray(X[test])
    for start in range(0, len(train), _BLOCK_ROWS):
        # train is sorted, so train[i] >= i: a block only reads rows no earlier block wrote.
        rows = train[start : start + _BLOCK_ROWS]
        X[start : start + len(rows)] = X[rows]
    if X.base is None and X.flags.owndata:
        X.resize((len(train), X.shape[1]), refcheck=False)  # realloc: the tail goes back
        return X, X_test
    return np.ascontiguousarray(X[: len(train)]), X_test


def _row_blocks(rows: np.ndarray) -> list[np.ndarray]:
    return [rows[start : start + _BLOCK_ROWS] for start in range(0, len(rows), _BLOCK_ROWS)]


def describe_datasets(num_clients: int = 10) -> list[dict[str, Any]]:
    """One row per dataset: name, samples, features, classes (None for user data), summary."""
    rows: list[dict[str, Any]] = []
    for entry in DATASETS:
        row: dict[str, Any] = {
            "name": entry.name,
            "samples": None,
            "features": None,
            "classes": None,
        }
        if not entry.extra.get("user_data"):
            data = load_dataset(entry.name, seed=0, num_clients=num_clients)
            row.update(
                samples=len(data.y_train) + len(data.y_test),
                features=data.num_features,
                classes=data.num_classes,
            )
        row["parameters"] = {p.name: p.default for p in entry.params if p.default is not REQUIRED}
        row["description"] = entry.summary
        rows.append(row)
    return rows
