"""The interface every model backend offers the round loop (NumPy built in, torch as an extra).

A backend turns the global parameters, the training arrays and a round's
:class:`~velocity.models.schedule.RoundPlan` into the clients' trained parameters; everything
after that (attacks, aggregation, the server optimizer) is backend-free and sees one
``(clients, params)`` float32 matrix. Parameters are one flat float32 vector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from velocity.models.schedule import RoundPlan
    from velocity.models.training import LocalConfig, LocalResult

__all__ = ["Model"]


@runtime_checkable
class Model(Protocol):
    """What the simulation needs of a model: its size, an initialization from the seed tree,
    a round of local training from a plan, and evaluation of one parameter vector."""

    @property
    def num_params(self) -> int: ...

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Initial parameters ``(d,)`` float32, drawn from ``rng`` only."""
        ...

    def train_round(
        self,
        global_params: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        plan: RoundPlan,
        cfg: LocalConfig,
        initial_momentum: np.ndarray | None = None,
    ) -> LocalResult:
        """Every client of ``plan`` trained from ``global_params`` on its batches of ``X, y``."""
        ...

    def evaluate(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy (NaN when the scores are not all finite)."""
        ...

    def predict(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Predicted class ``(n,)`` of one parameter vector on ``X``."""
        ...
