"""``TorchModel``: an ``nn.Module`` behind the :class:`~velocity.models.backend.Model` interface.

Parameters travel as one flat float32 vector (numpy), as with the NumPy models, so strategies,
attacks and the archive never see torch. A round's clients train together: their parameters are
stacked ``(clients, d)`` and one ``torch.func.vmap`` of ``torch.func.grad`` over a
``functional_call`` updates all of them per local step, the clients still training forming a
prefix of the stack (ordered by step count, as in the NumPy backend). ``train_loop`` is the
per-client reference; modules with BatchNorm (a batch statistic over padded slots would differ
from the client's own batch) or dropout (its draws are seeded per round and client) train
through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from velocity.models.mlp import softmax_cross_entropy
from velocity.models.schedule import RoundPlan
from velocity.models.torch_backend.runtime import deterministic, resolve_device
from velocity.models.training import LocalConfig, LocalResult
from velocity.seeds import child_seed

__all__ = ["BUFFER_MODES", "TorchModel", "sgd_step"]

BUFFER_MODES = ("average", "local")
_EVAL_BATCH = 1024
_DEFAULT_BUDGET = 512 * 2**20  # bytes of per-client state and activations in one chunk


def sgd_step(
    params: torch.Tensor,
    velocity: torch.Tensor,
    grads: torch.Tensor,
    anchor: torch.Tensor,
    cfg: LocalConfig,
) -> None:
    """In place, as ``models.training._sgd_step``: g += wd*p + mu*(p - global);
    v = m*v + g; p -= lr*v."""
    if cfg.weight_decay:
        grads += cfg.weight_decay * params
    if cfg.mu:
        grads += cfg.mu * (params - anchor)
    if cfg.momentum:
        velocity *= cfg.momentum
        velocity += grads
        grads = velocity
    params -= cfg.lr * grads


def _needs_loop(module: nn.Module) -> bool:
    """BatchNorm (batch statistics over padded slots would differ) and dropout (its draws
    are seeded per client in the loop) train one client at a time."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return any(isinstance(m, kinds) for m in module.modules())


class TorchModel:
    """A torch network with flat float32 parameters (then, with ``buffers = "average"``, its
    floating-point buffers such as BatchNorm running statistics).

    ``make_module()`` builds the network; ``init(rng)`` builds it again under a torch generator
    seeded from ``rng`` (the run's seed tree), so a module's own initialization is kept and
    nothing touches torch's global generator. ``init_params``, when given, replaces that with a
    draw of its own (``torch_mlp`` shares the NumPy MLP's draws).
    """

    def __init__(
        self,
        make_module: Callable[[], nn.Module],
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        device: str = "cpu",
        buffers: str = "average",
        vectorize: bool | None = None,
        init_params: Callable[[np.random.Generator], np.ndarray] | None = None,
        memory_budget: int = _DEFAULT_BUDGET,
    ) -> None:
        if buffers not in BUFFER_MODES:
            raise ValueError(f"buffers must be one of {', '.join(BUFFER_MODES)}, got {buffers!r}")
        self.make_module = make_module
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.device = resolve_device(device)
        self.buffers = buffers
        self.init_params = init_params
        self.memory_budget = memory_budget
        with torch.random.fork_rng(devices=[]):  # its default init must not draw globally
            self.module = make_module().to(self.device)
        self.vectorize = (not _needs_loop(self.module)) if vectorize is None else vectorize
        named = list(self.module.named_parameters())
        self.param_names = [n for n, _ in named]
        self.param_shapes = [tuple(p.shape) for _, p in named]
        self.param_sizes = [p.numel() for _, p in named]
        all_buffers = dict(self.module.named_buffers())
        self.float_buffers = [n for n, b in all_buffers.items() if b.is_floating_point()]
        # Integer buffers (BatchNorm's batch counter) stay with the module, never averaged.
        self.fixed_buffers = {n: b for n, b in all_buffers.items() if not b.is_floating_point()}
        self.buffer_shapes = [tuple(all_buffers[n].shape) for n in self.float_buffers]
        self.buffer_sizes = [all_buffers[n].numel() for n in self.float_buffers]
        self.num_weights = sum(self.param_sizes)
        self.global_buffers = self._flat_buffers(self.module)
        self.client_buffers: dict[int, torch.Tensor] = {}  # buffers = "local": client -> own
        self._data: tuple[np.ndarray, torch.Tensor] | None = None

    # -- layout ------------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        averaged = sum(self.buffer_sizes) if self.buffers == "average" else 0
        return self.num_weights + averaged

    @property
    def device_name(self) -> str:
        return self.device.type

    def _flat_buffers(self, module: nn.Module) -> torch.Tensor:
        found = dict(module.named_buffers())
        parts = [found[n].detach().reshape(-1).float() for n in self.float_buffers]
        return torch.cat(parts).to(self.device) if parts else torch.zeros(0, device=self.device)

    def _weights(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(flat, self.param_sizes, dim=-1)
        lead = flat.shape[:-1]
        return {
            n: t.reshape(*lead, *s)
            for n, t, s in zip(self.param_names, parts, self.param_shapes, strict=True)
        }

    def _buffer_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(flat, self.buffer_sizes, dim=-1) if self.buffer_sizes else ()
        lead = flat.shape[:-1]
        found = {
            n: t.reshape(*lead, *s)
            for n, t, s in zip(self.float_buffers, parts, self.buffer_shapes, strict=True)
        }
        return {**found, **self.fixed_buffers}

    def _split(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights and the buffers a vector ``(..., num_params)`` carries (the global
        buffers when they are kept local)."""
        weights = flat[..., : self.num_weights]
        if self.buffers == "average":
            return weights, flat[..., self.num_weights :]
        return weights, self.global_buffers.expand(*flat.shape[:-1], -1)

    # -- the Model protocol ------------------------------------------------------------------
    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Initial parameters from ``rng`` only (a torch generator seeded from it)."""
        if self.init_params is not None:
            drawn = np.asarray(self.init_params(rng), dtype=np.float32)
            return np.concatenate([drawn, self.global_buffers.cpu().numpy()])[: self.num_params]
        seed = int(rng.integers(0, 2**63 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # scoped: fork_rng restores torch's global generator
            fresh = self.make_module()
        weights = torch.cat([p.detach().reshape(-1) for p in fresh.parameters()])
        buffers = self._flat_buffers(fresh).cpu()
        self.global_buffers = buffers.to(self.device)
        parts = [weights, buffers] if self.buffers == "average" else [weights]
        return torch.cat(parts).numpy().astype(np.float32)

    def train_round(
        self,
        global_params: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        plan: RoundPlan,
        cfg: LocalConfig,
        initial_momentum: np.ndarray | None = None,
    ) -> LocalResult:
        """A round of local SGD for the plan's clients: vectorized with ``torch.func`` (or the
        per-client loop for modules with BatchNorm)."""
        train = self.train_vmap if self.vectorize else self.train_loop
        return train(global_params, X, y, plan, cfg, initial_momentum)

    def evaluate(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy (NaN when the scores are not all finite)."""
        logits = self.logits(params, X)
        losses, _ = softmax_cross_entropy(logits, y, np.ones(len(y), dtype=np.float32))
        loss = float(losses.astype(np.float64).mean())
        if not np.all(np.isfinite(logits)):
            return loss, float("nan")
        return loss, float(np.mean(logits.argmax(1) == y))

    def predict(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.logits(params, X).argmax(axis=1)

    def logits(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Scores ``(n, C)`` float32 of one parameter vector, in eval mode."""
        with deterministic(self.device), torch.no_grad():
            flat = torch.as_tensor(np.asarray(params, dtype=np.float32), device=self.device)
            weights, buffers = self._split(flat)
            if self.buffers == "local" and self.client_buffers:
                # The global model's statistics: the mean of the clients' own (FedBN keeps
                # them local; a global evaluation needs one set).
                buffers = torch.stack(list(self.client_buffers.values())).mean(dim=0)
            state = {**self._weights(weights), **self._buffer_dict(buffers)}
            self.module.eval()
            data = self._tensor(X)
            out = [
                functional_call(self.module, state, (data[i : i + _EVAL_BATCH],))
                for i in range(0, len(data), _EVAL_BATCH)
            ]
        return torch.cat(out).float().cpu().numpy() if out else np.zeros((0, self.num_classes))

    # -- training ----------------------------------------------------------------------------
    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        """``X (n, features)`` as ``(n, *input_shape)`` on the device (kept while X is)."""
        if self._data is None or self._data[0] is not X:
            data = torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device)
            self._data = (X, data.reshape(len(X), *self.input_shape))
        return self._data[1]

    def _batch_loss(
        self,
        weights: torch.Tensor,
        buffers: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean masked cross-entropy of one client's batch, and its summed loss (aux)."""
        state = {**self._weights(weights), **self._buffer_dict(buffers)}
        logits = functional_call(self.module, state, (x,))
        losses = nn.functional.cross_entropy(logits, y, reduction="none") * mask
        total = losses.sum()
        return total / mask.sum().clamp(min=1.0), total.detach()

    def chunk_size(self, width: int) -> int:
        """Clients per vmap chunk: per-client state (parameters, momentum, gradient, working
        copies) and one batch's activations within the memory budget."""
        per_sample = self._activations_per_sample()
        per_client = 4 * (6 * self.num_params + 3 * width * per_sample)
        return max(1, int(self.memory_budget // max(per_client, 1)))

    def _activations_per_sample(self) -> int:
        if not hasattr(self, "_act"):
            total = [0]

            def count(_m: nn.Module, _i: Any, out: Any) -> None:
                if isinstance(out, torch.Tensor):
                    total[0] += out.numel()

            hooks = [m.register_forward_hook(count) for m in self.module.modules()]
            try:
                with torch.no_grad():
                    self.module.eval()
                    self.module(torch.zeros(1, *self.input_shape, device=self.device))
            finally:
                for hook in hooks:
                    hook.remove()
            self._act = total[0]
        return self._act

    def _start(
        self,
        global_params: np.ndarray,
        rows: np.ndarray,
        initial_momentum: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        anchor = torch.as_tensor(np.asarray(global_params, dtype=np.float32), device=self.device)
        params = anchor.repeat(len(rows), 1)
        if initial_momentum is None:
            velocity = torch.zeros_like(params)
        else:
            start = np.asarray(initial_momentum, dtype=np.float32)[rows]
            velocity = torch.as_tensor(start, device=self.device).clone()
        return anchor, params, velocity

    def train_vmap(
        self,
        global_params: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        plan: RoundPlan,
        cfg: LocalConfig,
        initial_momentum: np.ndarray | None = None,
        chunk_size: int | None = None,
    ) -> LocalResult:
        """All clients of ``plan``, a chunk at a time, each step one vmapped gradient of the
        active prefix. Buffers pass through unchanged (no BatchNorm on this path)."""
        n, steps = plan.num_clients, plan.steps
        order = np.argsort(-steps, kind="stable")  # most steps first: the active set is a prefix
        chunk_size = chunk_size or self.chunk_size(plan.width)
        params_out = np.empty((n, self.num_params), dtype=np.float32)
        momentum_out = None if initial_momentum is None else np.empty_like(params_out)
        loss_sum = np.zeros(n, dtype=np.float64)
        step = vmap(grad(self._batch_loss, has_aux=True))
        with deterministic(self.device):
            data = self._tensor(X)
            labels = torch.as_tensor(np.asarray(y, dtype=np.int64), device=self.device)
            self.module.train()
            for start in range(0, n, chunk_size):
                chunk = order[start : start + chunk_size]
                anchor, params, velocity = self._start(global_params, chunk, initial_momentum)
                sched = torch.as_tensor(plan.schedule(chunk), device=self.device)
                active_until = steps[chunk]
                losses = torch.zeros(len(chunk), dtype=torch.float64, device=self.device)
                for s in range(sched.shape[1]):
                    a = int(np.count_nonzero(active_until > s))
                    idx = sched[:a, s]
                    mask = (idx >= 0).float()
                    safe = idx.clamp(min=0)
                    weights, buffers = self._split(params[:a])
                    grads, total = step(weights, buffers, data[safe], labels[safe], mask)
                    losses[:a] += total.double()
                    nw = self.num_weights  # buffers are no parameters: SGD leaves them
                    sgd_step(params[:a, :nw], velocity[:a, :nw], grads, anchor[:nw], cfg)
                params_out[chunk] = params.cpu().numpy()
                if momentum_out is not None:
                    momentum_out[chunk] = velocity.cpu().numpy()
                loss_sum[chunk] = losses.cpu().numpy()
        return LocalResult(params_out, _mean_loss(loss_sum, plan), plan.sizes, momentum_out)

    def _rng_devices(self) -> list[int]:
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else 0]

    def _train_one(
        self,
        row: int,
        global_params: np.ndarray,
        data: torch.Tensor,
        labels: torch.Tensor,
        plan: RoundPlan,
        cfg: LocalConfig,
        initial_momentum: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Row ``row`` of the plan trained alone: its parameters, momentum and summed loss."""
        anchor, params, velocity = self._start(global_params, np.array([row]), initial_momentum)
        client = int(plan.client_ids[row])
        nw = self.num_weights
        _, buffers = self._split(params[0])
        buffers = self.client_buffers.get(client, buffers).clone()
        total = 0.0
        for batch in plan.schedule([row])[0]:
            valid = torch.as_tensor(batch[batch >= 0], device=self.device)
            weights = params[0, :nw].clone().requires_grad_(True)
            state = {**self._weights(weights), **self._buffer_dict(buffers)}
            logits = functional_call(self.module, state, (data[valid],))
            losses = nn.functional.cross_entropy(logits, labels[valid], reduction="none")
            (g,) = torch.autograd.grad(losses.sum() / len(valid), weights)
            total += float(losses.detach().sum())
            sgd_step(params[:, :nw], velocity[:, :nw], g[None], anchor[:nw], cfg)
        if self.buffers == "average":
            params[0, nw:] = buffers
        else:
            self.client_buffers[client] = buffers
        return params[0].detach(), velocity[0], total

    def train_loop(
        self,
        global_params: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        plan: RoundPlan,
        cfg: LocalConfig,
        initial_momentum: np.ndarray | None = None,
    ) -> LocalResult:
        """Reference: one client at a time, each batch only its valid samples, the module in
        train mode (BatchNorm updates its running statistics in the client's buffers)."""
        n = plan.num_clients
        params_out = np.empty((n, self.num_params), dtype=np.float32)
        momentum_out = None if initial_momentum is None else np.empty_like(params_out)
        loss_sum = np.zeros(n, dtype=np.float64)
        with deterministic(self.device):
            data = self._tensor(X)
            labels = torch.as_tensor(np.asarray(y, dtype=np.int64), device=self.device)
            self.module.train()
            for row in range(n):
                client = int(plan.client_ids[row])
                # A module's own draws (dropout) come from a generator of (round, client).
                with torch.random.fork_rng(devices=self._rng_devices()):
                    torch.manual_seed(child_seed(plan.shuffle_key, "dropout", client))
                    params, velocity, total = self._train_one(
                        row, global_params, data, labels, plan, cfg, initial_momentum
                    )
                params_out[row] = params.cpu().numpy()
                if momentum_out is not None:
                    momentum_out[row] = velocity.cpu().numpy()
                loss_sum[row] = total
        return LocalResult(params_out, _mean_loss(loss_sum, plan), plan.sizes, momentum_out)


def _mean_loss(loss_sum: np.ndarray, plan: RoundPlan) -> np.ndarray:
    seen = plan.samples_seen.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, loss_sum / np.maximum(seen, 1), np.nan)
