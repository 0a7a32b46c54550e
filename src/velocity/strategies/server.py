"""Server optimizers: turn the round's aggregate update into the next global model.

An update is (client model - global model), so the aggregate points downhill and plain FedAvg is
``params + lr * aggregate`` with ``lr = 1``. Optimizers keep their state in a dict owned by the
run's strategy (reset per run).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from velocity.registry import Param, Registry

__all__ = ["SERVER_OPTIMIZERS", "sgd"]

SERVER_OPTIMIZERS: Registry = Registry("server optimizer")


@SERVER_OPTIMIZERS.register(
    "sgd",
    params=(Param("lr", float, 1.0, "server learning rate", low=0.0, low_open=True),),
    summary="Plain server step: params + lr * aggregate (FedAvg with lr=1).",
    paper="McMahan et al., AISTATS 2017",
    cost="O(d)",
)
def sgd(params: np.ndarray, aggregate: np.ndarray, state: dict[str, Any], *, lr: float) -> np.ndarray:
    """One plain server step."""
    return (params + np.float32(lr) * aggregate).astype(np.float32)
