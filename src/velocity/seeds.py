"""The seed tree: every random draw of a run comes from a named child of its seed.

Children are addressed by a path of names and integers (``("shuffle", round, client)``), not by
spawn order, so a draw never depends on how many other draws happened before it.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

__all__ = ["child_rng", "child_seed", "child_seed_sequence"]


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
