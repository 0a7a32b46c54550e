"""NumPy models with batched (client-stacked) forward and backward passes.

Parameters are one flat float32 vector per client; a stack of clients is a ``(c, d)`` array, and
every pass works on ``(c, batch, features)`` blocks with batched matmuls over the client axis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from velocity.models.schedule import RoundPlan
    from velocity.models.training import LocalConfig, LocalResult

__all__ = ["INITS", "MLP", "softmax_cross_entropy"]

INITS = ("zeros", "glorot_uniform", "he_uniform")
"""Initialization schemes: ``zeros`` (every weight and bias 0: logistic regression's start in
scikit-learn and the FedProx reference code), ``glorot_uniform`` (every layer U(+-sqrt(6 /
(fan_in + fan_out)))), ``he_uniform`` (ReLU layers U(+-sqrt(6 / fan_in)), the output layer
Glorot); biases start at 0 in every scheme."""


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample losses ``(..., b)`` (masked to 0) and d(loss)/d(logits) for each sample.

    ``logits`` is ``(..., b, C)``, ``labels`` and ``mask`` are ``(..., b)``.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(shifted, labels[..., None], axis=-1)[..., 0]
    losses = (np.log(total[..., 0]) - picked) * mask
    probs = exp / total
    np.put_along_axis(
        probs, labels[..., None], np.take_along_axis(probs, labels[..., None], axis=-1) - 1, axis=-1
    )
    return losses, probs * mask[..., None]


@dataclass(frozen=True)
class MLP:
    """Fully connected ReLU network with softmax output; ``hidden=()`` is logistic regression.

    ``init`` is one of :data:`INITS` (checked where parameters are drawn, in :meth:`init`).
    """

    num_features: int
    num_classes: int
    hidden: tuple[int, ...] = ()
    init_scheme: str = "he_uniform"

    @property
    def layer_sizes(self) -> list[tuple[int, int]]:
        widths = [self.num_features, *self.hidden, self.num_classes]
        return list(itertools.pairwise(widths))

    @property
    def num_params(self) -> int:
        return sum(i * o + o for i, o in self.layer_sizes)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Initial parameters by ``init_scheme`` (see :data:`INITS`); zero biases. ``zeros``
        draws nothing from ``rng``."""
        if self.init_scheme not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init_scheme!r}")
        if self.init_scheme == "zeros":
            return np.zeros(self.num_params, dtype=np.float32)
        parts = []
        last = len(self.layer_sizes) - 1
        for index, (fan_in, fan_out) in enumerate(self.layer_sizes):
            glorot = self.init_scheme == "glorot_uniform" or index == last
            scale = np.sqrt(6.0 / (fan_in + fan_out)) if glorot else np.sqrt(6.0 / fan_in)
            parts.append(rng.uniform(-scale, scale, fan_in * fan_out))
            parts.append(np.zeros(fan_out))
        return np.concatenate(parts).astype(np.float32)

    def unpack(self, params: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views ``(W (c, in, out), b (c, out))`` per layer into a ``(c, d)`` parameter stack."""
        c = params.shape[0]
        out, offset = [], 0
        for fan_in, fan_out in self.layer_sizes:
            W = params[:, offset : offset + fan_in * fan_out].reshape(c, fan_in, fan_out)
            offset += fan_in * fan_out
            b = params[:, offset : offset + fan_out]
            offset += fan_out
            out.append((W, b))
        return out

    def loss_and_grad(
        self, params: np.ndarray, X: np.ndarray, y: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Summed masked loss per client ``(c,)`` and gradient of the *mean* batch loss ``(c, d)``.

        ``params (c, d)``, ``X (c, b, f)``, ``y (c, b)`` int, ``mask (c, b)`` (1 = real sample).
        """
        layers = self.unpack(params)
        activations = [X]
        a = X
        for index, (W, b) in enumerate(layers):
            a = np.matmul(a, W) + b[:, None, :]
            if index < len(layers) - 1:
                a = np.maximum(a, 0, out=a)
            activations.append(a)
        losses, dlogits = softmax_cross_entropy(activations[-1], y, mask)
        count = np.maximum(mask.sum(axis=1), 1.0).astype(np.float32)
        delta = dlogits / count[:, None, None]
        grad = np.empty_like(params)
        grads = self.unpack(grad)
        for index in range(len(layers) - 1, -1, -1):
            a_in = activations[index]
            gW, gb = grads[index]
            np.matmul(a_in.transpose(0, 2, 1), delta, out=gW)
            gb[...] = delta.sum(axis=1)
            if index > 0:
                delta = np.matmul(delta, layers[index][0].transpose(0, 2, 1))
                delta *= activations[index] > 0
        return losses.sum(axis=1), grad

    def train_round(
        self,
        global_params: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        plan: RoundPlan,
        cfg: LocalConfig,
        initial_momentum: np.ndarray | None = None,
    ) -> LocalResult:
        """A round of local SGD for the plan's clients, vectorized across them (the NumPy
        backend: ``velocity.models.training.train_clients``)."""
        from velocity.models.training import train_clients

        return train_clients(
            self, global_params, X, y, plan, cfg, initial_momentum=initial_momentum
        )

    def evaluate(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of one parameter vector ``(d,)`` on ``(X, y)``.

        Scores that are not all finite (non-finite parameters, or overflow) predict nothing:
        the accuracy is NaN, not the share of the class argmax happens to pick.
        """
        logits = self.logits(params, X)
        losses, _ = softmax_cross_entropy(logits, y, np.ones(len(y), dtype=np.float32))
        loss = float(losses.astype(np.float64).mean())
        if not np.all(np.isfinite(logits)):
            return loss, float("nan")
        return loss, float(np.mean(logits.argmax(1) == y))

    def logits(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Output scores ``(n, C)`` of one parameter vector on ``X (n, f)``."""
        layers = self.unpack(params[None, :])
        a = X
        for index, (W, b) in enumerate(layers):
            a = a @ W[0] + b[0]
            if index < len(layers) - 1:
                a = np.maximum(a, 0)
        return a

    def predict(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.logits(params, X).argmax(axis=1)
