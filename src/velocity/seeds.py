"""The seed tree: every random draw of a run comes from a named child of its seed.

Children are addressed by a path of names and integers (``("shuffle", round)``), not by spawn
order, so a draw never depends on how many other draws happened before it. Where one generator
per client would be too slow (thousands of clients a round), :func:`counter_hash` derives many
draws at once from one child's key and integer counters (client, epoch, position), with the same
position independence: element i depends on the key and its own counters only.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

__all__ = ["child_rng", "child_seed", "child_seed_sequence", "counter_hash"]


@functools.lru_cache(maxsize=1024)
def _name_key(name: str) -> int:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") | (1 << 63)


def _path_key(part: str | int) -> int:
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise TypeError(f"seed path parts are str or int, got {type(part).__name__}")
    if isinstance(part, int):
        if part < 0:
            raise ValueError(f"seed path integers must be >= 0, got {part}")
        # Integers and names live in disjoint key spaces (names get the top bit set).
        return part
    return _name_key(part)


def child_seed_sequence(seed: int, *path: str | int) -> np.random.SeedSequence:
    """The SeedSequence at ``path`` below the run seed ``seed``."""
    return np.random.SeedSequence(seed, spawn_key=tuple(_path_key(p) for p in path))


def child_rng(seed: int, *path: str | int) -> np.random.Generator:
    """A PCG64 generator for the child ``path`` of ``seed`` (e.g. ``child_rng(7, "init")``)."""
    return np.random.Generator(np.random.PCG64(child_seed_sequence(seed, *path)))


def child_seed(seed: int, *path: str | int) -> int:
    """A 63-bit integer seed for the child ``path``, for libraries that take plain ints."""
    return int(child_seed_sequence(seed, *path).generate_state(2, np.uint64)[0] >> np.uint64(1))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on a uint64 array (wrapping arithmetic): a bijective bit mixer."""
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def counter_hash(key: int, *counters: np.ndarray) -> np.ndarray:
    """Pseudo-random uint64 words, one per element of the broadcast ``counters``.

    A counter-based draw: ``key`` (e.g. ``child_seed(seed, "shuffle", round)``) and each
    element's counters are chained through SplitMix64, so every word depends only on the key and
    that element's own counters, never on the other elements or on their order.
    """
    if not counters:
        raise ValueError("counter_hash needs at least one counter array")
    arrays = np.broadcast_arrays(*(np.asarray(c, dtype=np.uint64) for c in counters))
    h = np.full(arrays[0].shape, np.uint64(key), dtype=np.uint64)
    for c in arrays:
        h = _splitmix64(h + (c + np.uint64(1)) * _GOLDEN)
    return h
