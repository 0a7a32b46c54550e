"""A round's local work, fixed before anyone trains: the :class:`RoundPlan`.

For each client of the round the plan knows which samples it holds, the order it visits them in
each epoch (a shuffle drawn from the seed tree) and how many local steps it takes. Every backend
(NumPy, torch) trains from the same plan, so the batches a client sees never depend on the
backend, the chunking or the other clients of the round.

The shuffles are counter-based (``velocity.seeds.counter_hash`` keyed by
``child_seed(seed, "shuffle", round)`` and counted by client id, epoch and position): one
vectorized pass orders every client's samples, where a generator per client per round cost
13-28 us each. Client i's epoch e is its samples sorted by their hash words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from velocity.seeds import child_seed, counter_hash

__all__ = ["RoundPlan", "plan_round"]


@dataclass(frozen=True, eq=False)
class RoundPlan:
    """The local work of a round's ``n`` clients (rows, in the order the round lists them).

    ``client_indices[i]``: the training samples of row i; ``client_ids[i]``: its client id (what
    its shuffle is counted by); ``epochs``; ``width``: batch slots (the batch size, cut to the
    largest client's sample count); ``steps[i]``: the steps row i takes (``full_steps`` unless
    partial work cut it, see :meth:`with_steps`).
    """

    client_indices: tuple[np.ndarray, ...]
    client_ids: np.ndarray
    epochs: int
    width: int
    shuffle_key: int
    steps: np.ndarray

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    @property
    def sizes(self) -> np.ndarray:
        """``(n,)`` sample count of each row's client."""
        return np.array([len(i) for i in self.client_indices], dtype=np.int64)

    @property
    def steps_per_epoch(self) -> np.ndarray:
        return -(-self.sizes // self.width)

    @property
    def full_steps(self) -> np.ndarray:
        """``(n,)`` steps of each row's full local work (``epochs`` passes over its data)."""
        return self.epochs * self.steps_per_epoch

    @property
    def samples_seen(self) -> np.ndarray:
        """``(n,)`` samples each row visits in its ``steps`` (all but the last batch of an epoch
        are full)."""
        sizes, per_epoch = self.sizes, self.steps_per_epoch
        whole, part = np.divmod(self.steps, np.maximum(per_epoch, 1))
        in_part = np.minimum(part * self.width, sizes)
        return (whole * sizes + in_part).astype(np.int64)

    def with_steps(self, steps: np.ndarray) -> RoundPlan:
        """The same plan with row i stopping after ``steps[i]`` steps (partial work), which
        must lie in ``[0, full_steps[i]]``."""
        steps = np.asarray(steps, dtype=np.int64)
        if steps.shape != (self.num_clients,):
            raise ValueError(f"steps must have shape ({self.num_clients},), got {steps.shape}")
        if np.any(steps < 0) or np.any(steps > self.full_steps):
            raise ValueError("steps must lie between 0 and each client's full local work")
        return RoundPlan(
            self.client_indices,
            self.client_ids,
            self.epochs,
            self.width,
            self.shuffle_key,
            steps,
        )

    def schedule(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """``(len(rows), max_steps, width)`` int64 sample indices of ``rows`` (all rows when
        None), -1 marking padding: the last batch of an epoch, and every step after a row's
        ``steps``. ``max_steps`` is the largest ``steps`` among ``rows``."""
        rows = np.arange(self.num_clients) if rows is None else np.asarray(rows, dtype=np.int64)
        lens = self.sizes[rows]
        steps = self.steps[rows]
        per_epoch = self.steps_per_epoch[rows]
        out = np.full((len(rows), int(steps.max(initial=0)), self.width), -1, dtype=np.int64)
        if out.size == 0:
            return out
        epochs = self.epochs
        # One segment per (row, epoch); position j within it; every element's hash word.
        seg_len = np.repeat(lens, epochs)
        seg_start = np.cumsum(seg_len) - seg_len
        seg = np.repeat(np.arange(len(rows) * epochs), seg_len)
        pos = np.arange(int(seg_len.sum())) - seg_start[seg]
        row, epoch = np.divmod(seg, epochs)
        words = counter_hash(self.shuffle_key, self.client_ids[rows][row], epoch, pos)
        order = np.lexsort((pos, words, seg))  # within each segment: by hash word
        cat = np.concatenate([self.client_indices[r] for r in rows])
        row_start = np.cumsum(lens) - lens
        values = cat[row_start[row[order]] + pos[order]]
        # Sorted element t holds rank pos[t] in segment seg[t] (segments keep their places).
        step = epoch * per_epoch[row] + pos // self.width
        keep = step < steps[row]
        out[row[keep], step[keep], (pos % self.width)[keep]] = values[keep]
        return out


def plan_round(
    client_indices: Sequence[np.ndarray],
    client_ids: Sequence[int] | np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    round_index: int,
) -> RoundPlan:
    """The full local work of a round's clients: ``epochs`` shuffled passes over each client's
    samples in batches of ``batch_size``, shuffled from ``child_seed(seed, "shuffle", round)``.

    Batches never hold more than the largest client's samples: that padding is the same for
    every chunk, so a client's arithmetic does not depend on how clients are chunked.
    """
    indices = tuple(np.asarray(i, dtype=np.int64) for i in client_indices)
    ids = np.asarray(client_ids, dtype=np.int64)
    if len(ids) != len(indices):
        raise ValueError("one client id per client's indices")
    if any(len(i) == 0 for i in indices):
        raise ValueError("every client of a round holds at least one sample")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    width = min(batch_size, max((len(i) for i in indices), default=1))
    key = child_seed(seed, "shuffle", round_index)
    plan = RoundPlan(indices, ids, epochs, width, key, np.zeros(len(ids), dtype=np.int64))
    return plan.with_steps(plan.full_steps)
