"""Each faithfulness change against its paper's definition: the two Dirichlet partitions
(NIID-Bench's per-class shares, Hsu et al.'s per-client proportions), persistent client momentum
against Karimireddy et al.'s worker-momentum recurrence, and docs/attacks.md's claims against its
own arena table. Identities of runs made before these options stay what they were."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from velocity.cli import main
from velocity.data import PARTITIONERS, partition
from velocity.errors import SpecError
from velocity.models import LocalConfig, plan_round, train_clients, train_clients_naive
from velocity.seeds import child_rng
from velocity.simulation import run_simulation, sample_clients, validate_run
from velocity.spec import RunSpec
from velocity.strategies import build_strategy

DOCS = Path(__file__).resolve().parents[1] / "docs"

# Fingerprints computed with velocity before `over`, `data_files` and `client_momentum` existed.
OLD_FINGERPRINTS = {
    "{}": "62962a64634f69ddc8da7cf698e892b711f226886067b75e9f8f67fd7992b8ac",
    "dirichlet:alpha=0.3": "997e00ae87b950306485e1a59612a84f500f7ae774533896856684f4977d5b95",
}


def _old_dirichlet(labels: np.ndarray, k: int, rng: np.random.Generator, alpha: float) -> list:
    """velocity's dirichlet before ``over`` existed, verbatim (incl. its empty-client fill)."""
    owner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(k, alpha))
        cuts = np.floor(np.cumsum(shares)[:-1] * len(members) + 0.5).astype(np.int64)
        owner[members] = np.repeat(np.arange(k), np.diff(np.r_[0, cuts, len(members)]))
    counts = np.bincount(owner, minlength=k)
    for j in np.flatnonzero(counts == 0):
        donor = int(np.argmax(counts))
        owner[rng.choice(np.flatnonzero(owner == donor))] = j
        counts[donor] -= 1
        counts[j] += 1
    order = np.argsort(owner, kind="stable")
    return np.split(order, np.cumsum(counts)[:-1])


# ----------------------------------------------------------------------------- dirichlet


@pytest.mark.parametrize("alpha", [0.05, 0.5, 10.0])
@pytest.mark.parametrize("clients", [3, 20, 60])
def test_the_default_dirichlet_reproduces_the_earlier_bits(alpha: float, clients: int) -> None:
    labels = np.random.default_rng(7).integers(0, 10, 1500)
    new = partition(f"dirichlet:alpha={alpha}", labels, clients, child_rng(4, "partition"))
    old = _old_dirichlet(labels, clients, child_rng(4, "partition"), alpha)
    assert len(new) == len(old) and all(np.array_equal(a, b) for a, b in zip(new, old, strict=True))


def test_runs_made_before_the_new_options_keep_their_fingerprints() -> None:
    assert RunSpec().fingerprint == OLD_FINGERPRINTS["{}"]
    spec = RunSpec(partition="dirichlet:alpha=0.3")
    assert spec.fingerprint == OLD_FINGERPRINTS["dirichlet:alpha=0.3"]
    assert spec.partition == {"type": "dirichlet", "alpha": 0.3}  # `over` left out at default
    assert RunSpec(partition="dirichlet:alpha=0.3,over=classes").fingerprint == spec.fingerprint
    other = RunSpec(partition="dirichlet:alpha=0.3,over=clients")
    assert other.partition["over"] == "clients" and other.fingerprint != spec.fingerprint
    canonical = RunSpec().canonical()
    assert {"data_files", "client_momentum", "plugins"}.isdisjoint(canonical)


def _shares(parts: list[np.ndarray], labels: np.ndarray, classes: int) -> np.ndarray:
    """``(clients, classes)`` sample counts."""
    return np.stack([np.bincount(labels[p], minlength=classes) for p in parts]).astype(float)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 2.0])
def test_over_classes_is_niid_benchs_per_class_shares(alpha: float) -> None:
    # NIID-Bench: per class c, p_c ~ Dir_K(alpha); client j gets a p_{c,j} share of class c.
    # For Dir_K(alpha), E[sum_j p_j^2] = (1 - 1/K) / (K alpha + 1) + 1/K.
    classes, clients, per_class = 200, 10, 2000
    labels = np.repeat(np.arange(classes), per_class)
    parts = partition(f"dirichlet:alpha={alpha}", labels, clients, child_rng(0, "p"))
    counts = _shares(parts, labels, classes)  # (clients, classes)
    concentration = ((counts / counts.sum(axis=0)) ** 2).sum(axis=0)  # one per class
    expected = (1 - 1 / clients) / (clients * alpha + 1) + 1 / clients
    spread = concentration.std() / np.sqrt(classes)
    assert abs(concentration.mean() - expected) < 4 * spread + 1e-3, (
        concentration.mean(),
        expected,
    )
    # Client sizes vary (it is not Hsu et al.'s scheme), the more so the fewer the classes.
    few = np.repeat(np.arange(10), 200)
    small = partition(f"dirichlet:alpha={alpha}", few, 10, child_rng(0, "q"))
    sizes = np.array([len(x) for x in small])
    assert sizes.min() < 0.8 * sizes.mean()


@pytest.mark.parametrize("alpha", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("prior", ["uniform", "skewed"])
def test_over_clients_is_hsus_per_client_proportions(alpha: float, prior: str) -> None:
    # Hsu et al.: client k's class proportions q_k ~ Dir(alpha p), p the class prior, and every
    # client has the same number of samples. E[sum_c q_c^2] = (1 - sum p^2) / (alpha + 1) +
    # sum p^2; a client's empirical proportions of n samples add (1 - E[sum q^2]) / n.
    classes, clients, size = 10, 400, 100
    weights = np.ones(classes) if prior == "uniform" else np.arange(1, classes + 1.0)
    p = weights / weights.sum()
    labels = np.repeat(np.arange(classes), np.round(p * clients * size * 4).astype(int))
    parts = partition(f"dirichlet:alpha={alpha},over=clients", labels, clients, child_rng(1, "p"))
    sizes = np.array([len(x) for x in parts])
    assert sizes.max() - sizes.min() <= 1  # equal sizes
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))  # all, once
    # The pools hold 4x what the clients take on average: the first half of the clients draw
    # from full pools, as the definition assumes.
    counts = _shares(parts[: clients // 2], labels, classes)
    q = counts / counts.sum(axis=1, keepdims=True)
    simpson = (q**2).sum(axis=1)
    s_pop = (1 - (p**2).sum()) / (alpha + 1) + (p**2).sum()
    expected = s_pop + (1 - s_pop) / sizes[0]
    spread = simpson.std() / np.sqrt(len(simpson))
    assert abs(simpson.mean() - expected) < 4 * spread + 1e-3, (simpson.mean(), expected)
    assert np.allclose(q.mean(axis=0), p, atol=0.06)  # E[q] = p


def test_over_clients_uses_every_sample_even_when_classes_run_out() -> None:
    labels = np.repeat(np.arange(4), [500, 30, 30, 5])
    for alpha in (0.01, 1.0, 100.0):
        parts = partition(f"dirichlet:alpha={alpha},over=clients", labels, 7, child_rng(2, "p"))
        assert sorted(len(x) for x in parts) == [80] * 2 + [81] * 5  # 565 = 7 x 80 + 5
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


def test_over_is_validated() -> None:
    with pytest.raises(SpecError, match="parameter 'over' must be one of 'classes', 'clients'"):
        PARTITIONERS.canonical("dirichlet:over=samples")
    assert "Li et al., NIID-Bench" in PARTITIONERS.get("dirichlet").paper
    assert "Hsu et al." in PARTITIONERS.get("dirichlet").paper


def test_over_clients_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "s.db"))
    args = ["run", "--partition", "dirichlet:alpha=0.1,over=clients", "--rounds", "1"]
    assert main([*args, "--model", "logreg", "--num-clients", "7", "--json"]) == 0
    assert '"over": "clients"' in capsys.readouterr().out


# ----------------------------------------------------------------------------- client momentum


def _paper_algorithm(spec: RunSpec, tau: float) -> np.ndarray:
    """Karimireddy, He & Jaggi (ICML 2021), Algorithm 2: every worker i sends
    m_i <- (1 - beta) g_i(x) + beta m_i, the server takes v <- CC(m; v) and x <- x - eta v.
    Gradients are the workers' full-batch gradients (one local step per round)."""
    setup = validate_run(spec)
    beta = spec.momentum
    eta = spec.lr / (1 - beta)  # velocity's heavy-ball v = m / (1 - beta)
    tau_paper = tau / eta  # the radius in momentum units
    x = setup.initial_params.astype(np.float64)
    m = np.zeros((spec.num_clients, x.size))
    v = np.zeros(x.size)
    for _ in range(spec.rounds):
        for i, idx in enumerate(setup.clients):
            X, y = setup.X_train[idx][None], setup.y_train[idx][None]
            _, grad = setup.model.loss_and_grad(
                x.astype(np.float32)[None], X, y, np.ones((1, len(idx)), np.float32)
            )
            m[i] = (1 - beta) * grad[0] + beta * m[i]
        diff = m - v
        norms = np.linalg.norm(diff, axis=1)
        v = v + (diff * np.minimum(1.0, tau_paper / np.maximum(norms, 1e-30))[:, None]).mean(axis=0)
        x = x - eta * v
    return x


@pytest.mark.parametrize(("beta", "tau"), [(0.9, 10.0), (0.5, 0.05), (0.9, 0.01)])
def test_persistent_momentum_is_karimireddy_et_als_worker_momentum(beta: float, tau: float) -> None:
    fields = {
        "dataset": "wine",
        "model": "logreg",
        "num_clients": 4,
        "rounds": 6,
        "batch_size": 1000,
        "local_epochs": 1,
        "momentum": beta,
        "lr": 0.02,
        "strategy": f"centered_clipping:tau={tau}",
    }
    spec = RunSpec(**fields, client_momentum="persistent")
    paper = _paper_algorithm(spec, tau)
    ours = run_simulation(spec).final_params
    assert ours is not None
    assert np.allclose(ours, paper, rtol=1e-3, atol=1e-5), np.abs(ours - paper).max()
    # Reset every round (the default), the same run is not the paper's algorithm.
    reset = run_simulation(RunSpec(**fields)).final_params
    assert reset is not None and not np.allclose(reset, paper, rtol=1e-3, atol=1e-5)


def test_persistent_momentum_keeps_each_clients_buffer_across_the_rounds_it_skips() -> None:
    spec = RunSpec(
        dataset="digits",
        model="mlp:hidden=16",
        num_clients=6,
        clients_per_round=2,
        rounds=5,
        momentum=0.9,
        client_momentum="persistent",
        seed=3,
    )
    setup = validate_run(spec)
    cfg = LocalConfig(epochs=1, batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum)
    strategy = build_strategy(spec.strategy, seed=spec.seed)
    params, states = setup.initial_params, {}
    zero = np.zeros_like(params)
    for r in range(1, spec.rounds + 1):
        ids = sample_clients(spec, r)
        plan = plan_round(
            [setup.clients[k] for k in ids],
            ids,
            epochs=1,
            batch_size=spec.batch_size,
            seed=spec.seed,
            round_index=r,
        )
        local = train_clients(
            setup.model,
            params,
            setup.X_train,
            setup.y_train,
            plan,
            cfg,
            initial_momentum=np.stack([states.get(int(k), zero) for k in ids]),
        )
        assert local.momentum is not None
        states.update({int(k): local.momentum[i] for i, k in enumerate(ids)})
        params = strategy.step(params, local.params - params[None, :], local.num_samples * 1.0, r)
    result = run_simulation(spec)
    assert result.final_params is not None and np.array_equal(result.final_params, params)
    assert np.array_equal(run_simulation(spec).final_params, params)  # deterministic


def test_no_initial_momentum_is_the_same_arithmetic_as_zero_momentum() -> None:
    spec = RunSpec(dataset="digits", model="mlp:hidden=8", num_clients=5, momentum=0.9)
    setup = validate_run(spec)
    cfg = LocalConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9)
    clients = list(setup.clients)

    plan = plan_round(clients, range(len(clients)), epochs=2, batch_size=16, seed=0, round_index=1)
    args = (setup.model, setup.initial_params, setup.X_train, setup.y_train, plan)
    off = train_clients(*args, cfg)
    zero = np.zeros((len(clients), setup.model.num_params), np.float32)
    on = train_clients(*args, cfg, initial_momentum=zero)
    assert off.momentum is None and on.momentum is not None
    assert np.array_equal(off.params, on.params)
    naive = train_clients_naive(*args, cfg, initial_momentum=on.momentum)
    fast = train_clients(*args, cfg, initial_momentum=on.momentum, chunk_size=2)
    assert np.allclose(naive.params, fast.params, atol=1e-6)
    assert naive.momentum is not None and fast.momentum is not None
    assert np.allclose(naive.momentum, fast.momentum, atol=1e-5)


def test_client_momentum_is_validated_and_part_of_identity() -> None:
    with pytest.raises(SpecError, match="with momentum = 0 there is none"):
        RunSpec(client_momentum="persistent", momentum=0.0)
    with pytest.raises(SpecError, match="client_momentum"):
        RunSpec(client_momentum="kept")
    kept = RunSpec(client_momentum="persistent")
    assert kept.canonical()["client_momentum"] == "persistent"
    assert kept.fingerprint != RunSpec().fingerprint


# ----------------------------------------------------------------------------- docs/attacks.md


def _arena() -> dict[str, dict[str, float]]:
    """strategy -> attack column -> mean final accuracy, from docs/attacks.md's arena table."""
    text = (DOCS / "attacks.md").read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("| strategy \\ attack"))
    lines = [text[start]]
    for line in text[start + 2 :]:
        if not line.startswith("|"):
            break
        lines.append(line)
    header = [c.strip().strip("`") for c in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header) or "±" not in cells[1]:
            continue
        table[cells[0].strip("`")] = {
            h: float(c.split("±")[0]) for h, c in zip(header[1:], cells[1:], strict=True)
        }
    return table


def test_the_ipm_claims_are_what_the_arena_table_shows() -> None:
    arena = _arena()
    text = (DOCS / "attacks.md").read_text()
    assert "defeats median- and Krum-type rules" not in text
    robust = [s for s in arena if s not in ("fedavg", "centered_clipping")]
    drops = {s: round(arena[s]["none"] - arena[s]["ipm"], 3) for s in robust}
    worst = max(drops, key=drops.__getitem__)
    claim = re.search(
        r"at most ([0-9.]+), Bulyan: ([0-9.]+) -> ([0-9.]+); Krum\s+([0-9.]+), "
        r"median ([0-9.]+)\)",
        text,
    )
    assert claim is not None
    assert worst == "bulyan:f=4" and float(claim.group(1)) == drops[worst]
    assert float(claim.group(2)) == arena[worst]["none"]
    assert float(claim.group(3)) == arena[worst]["ipm"]
    assert float(claim.group(4)) == drops["krum:f=4"] and float(claim.group(5)) == drops["median"]
    reverse = re.search(r"reverses FedAvg's mean \(([0-9.]+) -> ([0-9.]+)\)", text)
    assert reverse is not None
    assert float(reverse.group(2)) == arena["fedavg"]["ipm:epsilon=10.0"]


def test_the_optimized_attacks_cost_the_robust_rules_what_the_table_says() -> None:
    arena = _arena()
    text = (DOCS / "attacks.md").read_text()
    claim = re.search(r"cost the robust\s+rules at most ([0-9.]+) here", text)
    assert claim is not None
    attacks = ["alie", "fang_krum", "fang_trimmed_mean", "minmax", "minsum", "ipm"]
    robust = [s for s in arena if s not in ("fedavg", "centered_clipping")]
    worst = max(arena[s]["none"] - arena[s][a] for s in robust for a in attacks)
    assert round(worst, 2) <= float(claim.group(1))
