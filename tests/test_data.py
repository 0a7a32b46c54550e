"""Datasets (bundled, synthetic, user files, Hugging Face) and partitioners."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity.data import DATASETS, PARTITIONERS, load_dataset, partition, synthetic_li2020
from velocity.errors import InputError, SpecError
from velocity.seeds import child_rng

BUNDLED = [e.name for e in DATASETS if not e.extra.get("user_data")]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_dataset_contract(name: str) -> None:
    data = load_dataset(name, seed=3, num_clients=10)
    assert data.X_train.dtype == np.float32 and data.X_test.dtype == np.float32
    assert data.y_train.dtype == np.int64
    assert data.X_train.shape[1] == data.X_test.shape[1] == data.num_features
    assert set(np.unique(data.y_train)) <= set(range(data.num_classes))
    # standardized with training statistics only
    assert np.allclose(data.X_train.mean(axis=0), 0, atol=1e-4)
    again = load_dataset(name, seed=3, num_clients=10)
    assert np.array_equal(again.X_train, data.X_train) and np.array_equal(again.y_test, data.y_test)


def test_split_is_stratified_fixed_by_seed_and_disjoint() -> None:
    data = load_dataset("digits", seed=0)
    assert len(data.y_train) + len(data.y_test) == 1797
    train_share = np.bincount(data.y_train) / len(data.y_train)
    test_share = np.bincount(data.y_test) / len(data.y_test)
    assert np.abs(train_share - test_share).max() < 0.01
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.y_test, data.y_test)
    rows_train = {r.tobytes() for r in data.X_train}
    assert not any(r.tobytes() in rows_train for r in data.X_test[:50])


def test_standardization_uses_training_statistics_only() -> None:
    data = load_dataset("wine", seed=0)
    # the test split is standardized with train statistics, so its mean is not exactly zero
    assert np.allclose(data.X_train.mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(data.X_test.mean(axis=0), 0, atol=1e-3)


def test_synthetic_follows_li2020_definition() -> None:
    raw = synthetic_li2020(1.0, 1.0, 20, child_rng(0, "t"))
    assert raw.X.shape[1] == 60 and raw.num_classes == 10
    sizes = np.bincount(raw.groups)
    assert len(sizes) == 20 and sizes.min() >= 50  # lognormal(4, 2) + 50
    assert sizes.max() > 3 * np.median(sizes)  # heavy-tailed (power-law-like) sizes
    # feature variance per coordinate shrinks like j^-1.2 within a client
    x0 = raw.X[raw.groups == int(np.argmax(sizes))]
    var = x0.var(axis=0)
    assert var[0] > 5 * var[-1]
    iid_like = synthetic_li2020(0.0, 0.0, 20, child_rng(0, "t"))
    skewed = synthetic_li2020(5.0, 5.0, 20, child_rng(0, "t"))
    spread = lambda r: np.std([r.X[r.groups == k].mean() for k in range(20)])  # noqa: E731
    assert spread(skewed) > spread(iid_like)


@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_synthetic_beta_is_the_feature_shifts_standard_deviation(beta: float) -> None:
    # x ~ N(v_k, diag(j^-1.2)), v_k ~ N(B_k, 1) per feature, B_k ~ N(0, beta^2): a client's mean
    # over its samples and 60 features is B_k plus noise of variance about 1/60 + 1/(60 n_k).
    raw = synthetic_li2020(0.0, beta, 1500, child_rng(3, "t"), max_per_client=60)
    assert raw.groups is not None
    counts = np.bincount(raw.groups)
    means = np.bincount(raw.groups, weights=raw.X.mean(axis=1)) / counts
    expected = np.sqrt(beta**2 + 1 / 60 + np.mean(1 / (60 * counts)))
    assert abs(means.std() / expected - 1) < 0.06  # sqrt(beta) instead would be far off


def test_npz_and_csv_user_data(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.repeat(["a", "b", "c"], 20)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    data = load_dataset(f"npz:path={tmp_path / 'd.npz'}", seed=0)
    assert data.num_classes == 3 and data.num_features == 4
    lines = ["f1,f2,label"] + [f"{a},{b},{c}" for (a, b), c in zip(X[:, :2], y, strict=True)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset({"type": "csv", "path": str(tmp_path / "d.csv")}, seed=0)
    assert data.num_features == 2 and len(data.y_train) + len(data.y_test) == 60


def test_user_data_errors_name_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=r"missing\.npz: file not found"):
        load_dataset(f"npz:path={tmp_path / 'missing.npz'}", seed=0)
    (tmp_path / "bad.csv").write_text("a,label\n1,x\nz,y\n")
    with pytest.raises(InputError, match=r"bad\.csv: feature columns must be numeric"):
        load_dataset(f"csv:path={tmp_path / 'bad.csv'}", seed=0)
    with pytest.raises(InputError, match="no label column 'target'"):
        load_dataset(f"csv:path={tmp_path / 'bad.csv'},label=target", seed=0)


def test_hugging_face_dataset_saved_to_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hf = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)
    table = {
        "x1": rng.normal(size=40).tolist(),
        "x2": rng.normal(size=40).tolist(),
        "label": [i % 2 for i in range(40)],
    }
    hf.Dataset.from_dict(table).save_to_disk(str(tmp_path / "tiny"))
    data = load_dataset(f"hf:path={tmp_path / 'tiny'}", seed=0)
    assert data.num_features == 2 and data.num_classes == 2
    assert len(data.y_train) == 32 and len(data.y_test) == 8
    with pytest.raises(SpecError, match="exactly one of 'name' or 'path'"):
        load_dataset("hf", seed=0)


# --- partitioners: contract over every registry entry -----------------------------------------

PARTITION_SPECS = {
    "iid": "iid",
    "dirichlet": "dirichlet:alpha=0.3",
    "shard": "shard",
    "natural": "natural",
}


def test_every_partitioner_is_covered() -> None:
    assert set(PARTITIONERS.names()) == set(PARTITION_SPECS)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(40, 400),
    classes=st.integers(2, 10),
    clients=st.integers(1, 20),
    seed=st.integers(0, 2**32),
    name=st.sampled_from(sorted(PARTITION_SPECS)),
)
def test_partition_properties(n: int, classes: int, clients: int, seed: int, name: str) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    groups = np.arange(n) % clients
    parts = partition(PARTITION_SPECS[name], labels, clients, child_rng(seed, "p"), groups)
    assert len(parts) == clients
    everything = np.concatenate(parts)
    assert np.array_equal(np.sort(everything), np.arange(n))  # each sample exactly once
    assert min(len(p) for p in parts) >= 1  # no client is empty
    again = partition(PARTITION_SPECS[name], labels, clients, child_rng(seed, "p"), groups)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def _label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    global_mix = np.bincount(labels) / len(labels)
    dists = []
    for p in parts:
        mix = np.bincount(labels[p], minlength=len(global_mix)) / len(p)
        dists.append(0.5 * np.abs(mix - global_mix).sum())
    return float(np.mean(dists))


def test_label_skew_grows_as_alpha_shrinks() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    skews = [
        np.mean(
            [
                _label_skew(
                    partition(f"dirichlet:alpha={a}", labels, 20, child_rng(s, "p")), labels
                )
                for s in range(3)
            ]
        )
        for a in (100.0, 1.0, 0.1)
    ]
    assert skews[0] < skews[1] < skews[2]
    iid_skew = _label_skew(partition("iid", labels, 20, child_rng(0, "p")), labels)
    assert iid_skew < skews[1]


def test_shards_give_few_labels_per_client() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = partition("shard:per_client=2", labels, 50, child_rng(0, "p"))
    assert max(len(np.unique(labels[p])) for p in parts) <= 2


def test_partition_errors() -> None:
    labels = np.zeros(5, dtype=np.int64)
    with pytest.raises(SpecError, match="5 training samples cannot fill 10 clients"):
        partition("iid", labels, 10, child_rng(0, "p"))
    with pytest.raises(SpecError, match="needs a dataset with its own clients"):
        partition("natural", labels, 1, child_rng(0, "p"))
    with pytest.raises(SpecError, match="parameter 'alpha' must be a number > 0"):
        partition("dirichlet:alpha=0", labels, 1, child_rng(0, "p"))


@pytest.mark.parametrize(
    ("name", "loader"),
    [("digits", "load_digits"), ("wine", "load_wine"), ("breast_cancer", "load_breast_cancer")],
)
def test_bundled_files_equal_scikit_learns_own_loaders(name: str, loader: str) -> None:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = getattr(sklearn_datasets, loader)()
    raw = DATASETS.get(name).obj()
    assert np.array_equal(raw.X, bunch.data)
    assert np.array_equal(raw.y, bunch.target)


def test_malformed_user_files_are_input_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "a.npy", np.zeros((4, 2)))
    with pytest.raises(InputError, match=r"not an \.npz archive"):
        load_dataset(f"npz:path={tmp_path / 'a.npy'}", seed=0)
    np.savez(tmp_path / "scalar.npz", X=np.float64(1.0), y=np.int64(0))
    with pytest.raises(InputError, match="features hold no samples"):
        load_dataset(f"npz:path={tmp_path / 'scalar.npz'}", seed=0)
    np.savez(tmp_path / "empty.npz", X=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(InputError, match="features hold no samples"):
        load_dataset(f"npz:path={tmp_path / 'empty.npz'}", seed=0)
    np.savez(tmp_path / "complex.npz", X=np.ones((6, 2), dtype=complex), y=np.arange(6) % 2)
    with pytest.raises(InputError, match="features must be real numbers"):
        load_dataset(f"npz:path={tmp_path / 'complex.npz'}", seed=0)
    (tmp_path / "bin.csv").write_bytes(b"a,label\n\xff\xfe,1\n")
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        load_dataset(f"csv:path={tmp_path / 'bin.csv'}", seed=0)
    (tmp_path / "notads").mkdir()
    pytest.importorskip("datasets")
    with pytest.raises(InputError, match="cannot load Hugging Face dataset"):
        load_dataset(f"hf:path={tmp_path / 'notads'}", seed=0)
