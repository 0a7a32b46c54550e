"""Contract checks for aggregators and attacks, public so plug-in authors run them too.

The test suite runs these over every registry entry, like scikit-learn's ``check_estimator``::

    from velocity.testing import check_aggregator
    check_aggregator("my_median")          # or the decorated function itself

Each check raises AssertionError naming the entry and the broken promise: shapes and dtypes,
inputs never modified, seed determinism, permutation behaviour as declared (``symmetric``),
default-constructible parameters, declared records and knowledge (attacks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from velocity.attacks import ATTACKS
from velocity.registry import REQUIRED, Entry, Registry
from velocity.strategies import AGGREGATORS, PRE_AGGREGATORS

__all__ = ["check_aggregator", "check_attack", "check_pre_aggregator"]


def _fail(entry: Entry[Any], promise: str) -> AssertionError:
    return AssertionError(f"{entry.name}: {promise}")


def _require(ok: bool, entry: Entry[Any], promise: str) -> None:
    if not ok:
        raise _fail(entry, promise)


def _entry(registry: Registry[Any], target: str | Callable[..., Any] | Entry[Any]) -> Entry[Any]:
    if isinstance(target, Entry):
        return target
    if isinstance(target, str):
        return registry.get(target)
    for entry in registry:
        if entry.obj is target:
            return entry
    raise AssertionError(
        f"{getattr(target, '__name__', target)!r} is not registered as an {registry.kind}; "
        "decorate it first"
    )


def _defaults(entry: Entry[Any]) -> dict[str, Any]:
    required = [p.name for p in entry.params if p.default is REQUIRED]
    _require(not required, entry, f"parameters {required} have no default (default-constructible)")
    _require(bool(entry.summary), entry, "needs a summary (velocity strategies lists it)")
    return entry.defaults()


def _sample(n: int = 11, d: int = 37, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    updates = rng.normal(0.3, 1.0, size=(n, d)).astype(np.float32)
    weights = rng.integers(1, 50, size=n).astype(np.float64)
    return updates, weights


def _call_stage(
    entry: Entry[Any], updates: np.ndarray, weights: np.ndarray, seed: int = 123
) -> Any:
    """Call a strategy stage the way a Strategy does (a fresh rng and state)."""
    params = dict(entry.defaults())
    if entry.extra.get("seeded"):
        params["rng"] = np.random.default_rng(seed)
    if entry.extra.get("stateful"):
        params["state"] = {}
    return entry.obj(updates, weights, **params)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _check_untouched_and_deterministic(entry: Entry[Any], call: Callable[[], Any]) -> Any:
    first, second = call(), call()
    _require(_same(first, second), entry, "two calls with the same seed must give the same output")
    return first


def check_aggregator(target: str | Callable[..., Any] | Entry[Any]) -> None:
    """Check an aggregator: ``(n, d)`` float32 updates and ``(n,)`` weights in, a finite
    ``(d,)`` float32 aggregate out, inputs untouched, the same output for the same seed, and
    (unless registered with ``symmetric=False``) the same output for any client order."""
    entry = _entry(AGGREGATORS, target)
    _defaults(entry)
    updates, weights = _sample()
    before_u, before_w = updates.copy(), weights.copy()
    out = _check_untouched_and_deterministic(entry, lambda: _call_stage(entry, updates, weights))
    _require(np.array_equal(updates, before_u), entry, "must not modify the updates")
    _require(np.array_equal(weights, before_w), entry, "must not modify the weights")
    out = np.asarray(out)
    _require(out.shape == (updates.shape[1],), entry, f"must return shape (d,), got {out.shape}")
    _require(out.dtype == np.float32, entry, f"must return float32, got {out.dtype}")
    _require(bool(np.all(np.isfinite(out))), entry, "must return finite values on finite input")
    if entry.extra.get("symmetric", True):
        perm = np.random.default_rng(5).permutation(updates.shape[0])
        shuffled = np.asarray(_call_stage(entry, updates[perm], weights[perm]))
        _require(
            bool(np.allclose(out, shuffled, rtol=1e-5, atol=1e-6)),
            entry,
            "declared symmetric but the output depends on the order of the clients "
            "(register with symmetric=False if that is by design)",
        )


def check_pre_aggregator(target: str | Callable[..., Any] | Entry[Any]) -> None:
    """Check a pre-aggregator: ``(m, d)`` float32 updates and ``(m,)`` weights out with the
    total weight kept, inputs untouched, seed determinism, and (``symmetric``) reordering the
    clients reorders the output rows the same way."""
    entry = _entry(PRE_AGGREGATORS, target)
    _defaults(entry)
    updates, weights = _sample()
    before_u, before_w = updates.copy(), weights.copy()
    out, new_weights = _check_untouched_and_deterministic(
        entry, lambda: _call_stage(entry, updates, weights)
    )
    _require(np.array_equal(updates, before_u), entry, "must not modify the updates")
    _require(np.array_equal(weights, before_w), entry, "must not modify the weights")
    _require(
        out.ndim == 2 and out.shape[1] == updates.shape[1] and out.dtype == np.float32,
        entry,
        f"must return float32 updates of shape (m, d), got {out.dtype} {out.shape}",
    )
    _require(new_weights.shape == (out.shape[0],), entry, "must return one weight per row")
    _require(
        bool(np.isclose(new_weights.sum(), weights.sum())), entry, "must keep the total weight"
    )
    if entry.extra.get("symmetric", True):
        perm = np.random.default_rng(6).permutation(updates.shape[0])
        shuffled, shuffled_weights = _call_stage(entry, updates[perm], weights[perm])
        _require(
            bool(np.allclose(out[perm], shuffled, rtol=1e-5, atol=1e-6))
            and np.array_equal(new_weights[perm], shuffled_weights),
            entry,
            "declared symmetric but reordering the clients does not reorder its output the same "
            "way (register with symmetric=False if that is by design)",
        )


def _attack_round(num_malicious: int, n: int = 10, d: int = 7) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(42)
    updates = rng.normal(0.1, 1.0, (n, d)).astype(np.float32)
    weights = rng.integers(20, 80, n).astype(np.float64)
    malicious = np.zeros(n, dtype=bool)
    malicious[np.linspace(1, n - 1, num_malicious).astype(int)] = True
    return updates, weights, malicious


def _check_model_attack(entry: Entry[Any], params: dict[str, Any]) -> None:
    for m in (1, 3):
        updates, weights, malicious = _attack_round(m)
        copies = updates.copy(), weights.copy(), malicious.copy()

        def call(
            u: np.ndarray = updates, w: np.ndarray = weights, mask: np.ndarray = malicious
        ) -> Any:
            return entry.obj(u, w, mask, np.random.default_rng(7), **params)

        out, info = _check_untouched_and_deterministic(entry, call)
        for before, after in zip(copies, (updates, weights, malicious), strict=True):
            _require(np.array_equal(before, after), entry, "must not modify its inputs")
        out = np.asarray(out)
        _require(
            out.ndim == 2 and out.shape[1] == updates.shape[1] and out.shape[0] >= m,
            entry,
            f"must return at least {m} rows of {updates.shape[1]} values, got {out.shape}",
        )
        _require(out.dtype == np.float32, entry, f"must return float32, got {out.dtype}")
        _require(bool(np.all(np.isfinite(out))), entry, "must return finite rows")
        declared = set(entry.extra.get("records", ()))
        _require(set(info) == declared, entry, f"info keys {set(info)} != records {declared}")
        changed = updates.copy()
        changed[~malicious] = np.random.default_rng(1).normal(5.0, 3.0, changed[~malicious].shape)
        again, _ = call(u=changed)
        if not entry.extra.get("omniscient"):
            _require(
                np.array_equal(out, again),
                entry,
                "is declared non-omniscient but its output depends on the honest rows",
            )


def _check_data_attack(entry: Entry[Any], params: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 64)).astype(np.float32)
    y = np.tile(np.arange(10), 7)[:60].astype(np.int64)
    X0, y0 = X.copy(), y.copy()

    def call() -> Any:
        return entry.obj(
            X,
            y,
            np.random.default_rng(9),
            shared_rng=np.random.default_rng([9, 1]),
            num_classes=10,
            **params,
        )

    X_out, y_out = _check_untouched_and_deterministic(entry, call)
    _require(np.array_equal(X, X0) and np.array_equal(y, y0), entry, "must not modify its inputs")
    _require(X_out is not X and y_out is not y, entry, "must return new arrays")
    _require(
        X_out.shape == X.shape and X_out.dtype == X.dtype,
        entry,
        f"must return features of shape {X.shape} {X.dtype}, got {X_out.shape} {X_out.dtype}",
    )
    _require(
        y_out.shape == y.shape and y_out.dtype == np.int64,
        entry,
        f"must return int64 labels of shape {y.shape}, got {y_out.dtype} {y_out.shape}",
    )
    _require(0 <= int(y_out.min()) and int(y_out.max()) < 10, entry, "labels must stay classes")
    evaluate = entry.extra.get("evaluate")
    declared = set(entry.extra.get("metrics", ()))
    if evaluate is None:
        _require(not declared, entry, "declares metrics but has no evaluate function")
        return
    metrics = evaluate(lambda inputs: np.zeros(len(inputs), dtype=np.int64), X, y, **params)
    _require(set(metrics) == declared, entry, f"metrics {set(metrics)} != declared {declared}")


def check_attack(target: str | Callable[..., Any] | Entry[Any]) -> None:
    """Check a model attack (rows of the right shape, float32 and finite, declared records,
    blind to honest rows unless omniscient) or a data attack (same shapes and dtypes, labels in
    range, declared metrics); both must leave their inputs untouched and be seed-deterministic."""
    entry = _entry(ATTACKS, target)
    params = _defaults(entry)
    _require(
        entry.extra.get("kind") in ("model", "data"),
        entry,
        "must be registered with model_attack or data_attack",
    )
    if entry.extra["kind"] == "model":
        _check_model_attack(entry, params)
    else:
        _check_data_attack(entry, params)
