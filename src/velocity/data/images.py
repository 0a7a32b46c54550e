"""Image datasets: samples are images ``(C, H, W)``, stored as flat rows of X with the shape in
``RawData.sample_shape`` (so partitioners, attacks and the NumPy models see a table, and torch
models see images).

``digits_images`` is bundled (scikit-learn's 8x8 digits); ``npz_images`` reads a user's arrays;
``idx_images`` reads MNIST / Fashion-MNIST files in their IDX format, ``cifar10_bin`` the
CIFAR-10 binary batches and ``femnist_leaf`` a LEAF FEMNIST JSON file (writers as natural
clients), from files already on disk (nothing is downloaded; the files are
hashed into the run's identity like every user data file).
"""

from __future__ import annotations

import gzip
import io
from typing import Any

import numpy as np

from velocity.data.datasets import (
    _TEST_FRACTION,
    DATASETS,
    RawData,
    _labels_to_int,
    _sklearn_loader,
)
from velocity.datafiles import open_user_file
from velocity.errors import InputError
from velocity.registry import Param

__all__ = ["images_from_array", "read_cifar10_binary", "read_idx", "read_leaf_json"]

_LAYOUTS = ("auto", "nchw", "nhwc")


@DATASETS.register(
    "digits_images",
    params=(_TEST_FRACTION,),
    summary="scikit-learn's 8x8 digits as 1x8x8 images (bundled): 1797 samples, 10 classes",
    paper="scikit-learn",
    shape=(1797, 64, 10),
)
def _load_digits_images(**kwargs: Any) -> RawData:
    raw = _sklearn_loader("load_digits")(**kwargs)
    return RawData(X=raw.X, y=raw.y, sample_shape=(1, 8, 8))


def images_from_array(
    x: np.ndarray, layout: str, source: str
) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)`` images -> flat float64 rows and
    ``(C, H, W)``. ``auto`` reads a last axis of 1 or 3 (and a second that is not) as NHWC."""
    if layout not in _LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(_LAYOUTS)}, got {layout!r}")
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise InputError(f"images must be numbers, got dtype {x.dtype}", source=source)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise InputError(
            f"images must have shape (N, C, H, W), (N, H, W, C) or (N, H, W), got {x.shape}",
            source=source,
        )
    nhwc = layout == "nhwc" or (
        layout == "auto" and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    )
    if nhwc:
        x = x.transpose(0, 3, 1, 2)
    if len(x) == 0:
        raise InputError("holds no images", source=source)
    flat = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64)
    if not np.all(np.isfinite(flat)):
        raise InputError("images contain NaN or infinite values", source=source)
    return flat, tuple(int(s) for s in x.shape[1:])


def _read(path: str) -> bytes:
    with open_user_file(path) as handle:
        content = handle.read()
    if content[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(content)
        except (OSError, EOFError) as exc:
            raise InputError(f"not a readable gzip file ({exc})", source=path) from None
    return bytes(content)


@DATASETS.register(
    "npz_images",
    params=(
        Param("path", str, doc="a .npz file with images x (N,C,H,W / N,H,W,C / N,H,W) and y"),
        Param("x_key", str, "x", "name of the image array"),
        Param("y_key", str, "y", "name of the label array"),
        Param("layout", str, "auto", "axis order of x", choices=_LAYOUTS),
        _TEST_FRACTION,
    ),
    summary="Images from a local .npz file (arrays x and y)",
    user_data=True,
    user_files=("path",),
)
def _load_npz_images(*, path: str, x_key: str, y_key: str, layout: str, **_: Any) -> RawData:
    try:
        with np.load(io.BytesIO(_read(path)), allow_pickle=False) as data:
            missing = [k for k in (x_key, y_key) if k not in data.files]
            if missing:
                raise InputError(
                    f"array '{missing[0]}' not in file; it holds {', '.join(data.files)}",
                    source=path,
                )
            x, y = data[x_key], data[y_key]
    except (OSError, ValueError, EOFError, AttributeError) as exc:
        raise InputError(f"not a readable .npz file ({exc})", source=path) from None
    flat, shape = images_from_array(x, layout, path)
    if np.ndim(y) != 1 or len(y) != len(flat):
        raise InputError(f"x has {len(flat)} images but y has shape {np.shape(y)}", source=path)
    return RawData(X=flat, y=_labels_to_int(np.asarray(y), path), sample_shape=shape)


def read_idx(content: bytes, source: str) -> np.ndarray:
    """An IDX array (MNIST's format: magic 0x0000 08 <ndim>, big-endian int32 sizes, bytes)."""
    if len(content) < 4 or content[:3] != b"\x00\x00\x08":
        raise InputError("not an IDX file of unsigned bytes (MNIST format)", source=source)
    ndim = content[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(content) < header:
        raise InputError("truncated IDX header", source=source)
    dims = tuple(int(d) for d in np.frombuffer(content[4:header], dtype=">i4"))
    if len(content) - header != int(np.prod(dims)):
        raise InputError(f"IDX data does not match its shape {dims}", source=source)
    return np.frombuffer(content[header:], dtype=np.uint8).reshape(dims)


@DATASETS.register(
    "idx_images",
    params=(
        Param("images", str, doc="IDX image file, e.g. train-images-idx3-ubyte(.gz)"),
        Param("labels", str, doc="IDX label file, e.g. train-labels-idx1-ubyte(.gz)"),
        _TEST_FRACTION,
    ),
    summary="MNIST / Fashion-MNIST files in IDX format (gzipped or not), already on disk",
    paper="LeCun et al. 1998 (MNIST); Xiao et al. 2017 (Fashion-MNIST)",
    user_data=True,
    user_files=("images", "labels"),
)
def _load_idx(*, images: str, labels: str, **_: Any) -> RawData:
    x = read_idx(_read(images), images)
    y = read_idx(_read(labels), labels)
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"labels have shape {y.shape}, images {x.shape}", source=labels)
    flat, shape = images_from_array(x, "nchw", images)
    return RawData(X=flat / 255.0, y=y.astype(np.int64), sample_shape=shape)


_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10_binary(content: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's binary batches: records of 1 label byte + 3x32x32 pixel bytes."""
    if len(content) == 0 or len(content) % _CIFAR_RECORD:
        raise InputError(
            f"not a CIFAR-10 binary batch (size {len(content)} is not a multiple of "
            f"{_CIFAR_RECORD})",
            source=source,
        )
    table = np.frombuffer(content, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = table[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise InputError("CIFAR-10 labels are 0..9", source=source)
    return table[:, 1:].reshape(-1, 3, 32, 32), labels


@DATASETS.register(
    "cifar10_bin",
    params=(
        Param("path", str, doc="a CIFAR-10 binary batch, e.g. data_batch_1.bin"),
        _TEST_FRACTION,
    ),
    summary="A CIFAR-10 binary batch (3x32x32 images, 10 classes), already on disk",
    paper="Krizhevsky 2009",
    user_data=True,
    user_files=("path",),
)
def _load_cifar10(*, path: str, **_: Any) -> RawData:
    x, y = read_cifar10_binary(_read(path), path)
    flat, shape = images_from_array(x, "nchw", path)
    return RawData(X=flat / 255.0, y=y, sample_shape=shape, num_classes=10)


def read_leaf_json(content: bytes, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A LEAF data file (``{"users": [...], "user_data": {user: {"x": [...], "y": [...]}}}``):
    flat pixel rows, labels and each sample's writer index (in ``users`` order)."""
    import json

    try:
        doc = json.loads(content)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"not a LEAF JSON file ({type(exc).__name__})", source=source) from None
    users = doc.get("users") if isinstance(doc, dict) else None
    user_data = doc.get("user_data") if isinstance(doc, dict) else None
    if not isinstance(users, list) or not isinstance(user_data, dict) or not users:
        raise InputError("a LEAF file has a non-empty 'users' list and 'user_data'", source=source)
    xs, ys, groups = [], [], []
    for index, user in enumerate(users):
        entry = user_data.get(user) if isinstance(user, str) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("x"), list):
            raise InputError(f"user_data has no samples for user {user!r}", source=source)
        try:
            x = np.asarray(entry["x"], dtype=np.float64)
            y = np.asarray(entry.get("y"), dtype=np.int64)
        except (TypeError, ValueError):
            raise InputError(f"user {user!r}: x and y must be numbers", source=source) from None
        if x.ndim != 2 or y.shape != (len(x),):
            raise InputError(
                f"user {user!r}: x must be a list of pixel rows and y one label per row",
                source=source,
            )
        xs.append(x)
        ys.append(y)
        groups.append(np.full(len(x), index, dtype=np.int64))
    widths = {x.shape[1] for x in xs}
    if len(widths) != 1:
        raise InputError(f"users' images differ in size: {sorted(widths)}", source=source)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)


@DATASETS.register(
    "femnist_leaf",
    params=(
        Param("path", str, doc="a LEAF FEMNIST data file (.json), e.g. all_data_0.json"),
        Param("size", int, 28, "image side (LEAF's FEMNIST: 28x28 pixels, 1 channel)"),
        _TEST_FRACTION,
    ),
    summary="FEMNIST from a LEAF JSON file, already on disk; writers are natural clients",
    paper="Caldas et al., LEAF, 2018",
    natural=True,
    user_data=True,
    user_files=("path",),
)
def _load_femnist_leaf(*, path: str, size: int, **_: Any) -> RawData:
    x, y, groups = read_leaf_json(_read(path), path)
    if size < 1 or x.shape[1] != size * size:
        raise InputError(
            f"images have {x.shape[1]} pixels, not size x size = {size * size}", source=path
        )
    if y.min() < 0 or y.max() >= _FEMNIST_CLASSES:
        raise InputError(f"FEMNIST labels are 0..{_FEMNIST_CLASSES - 1}", source=path)
    flat, shape = images_from_array(x.reshape(-1, 1, size, size), "nchw", path)
    return RawData(X=flat, y=y, groups=groups, sample_shape=shape, num_classes=_FEMNIST_CLASSES)


_FEMNIST_CLASSES = 62  # digits, upper- and lower-case letters
