"""The PyTorch backend: torch models behind the same Model interface as the NumPy ones.

vmap-trained clients equal the per-client loop; torch_mlp follows the NumPy MLP step for step
from the same initial draws; a run is bit-identical when repeated; the install hint, the
device rules, buffers, user modules and image files behave as documented.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from velocity.data import load_dataset, partition  # noqa: E402
from velocity.errors import InputError  # noqa: E402
from velocity.models import (  # noqa: E402
    MODELS,
    LocalConfig,
    build_model,
    plan_round,
    train_clients,
)
from velocity.plugins import load_plugin  # noqa: E402
from velocity.seeds import child_rng  # noqa: E402
from velocity.simulation import run_simulation  # noqa: E402
from velocity.spec import RunSpec, spec_from_mapping  # noqa: E402

TORCH_MODELS = [e.name for e in MODELS if e.extra.get("backend") == "torch"]
BUILT_IN = ["torch_mlp", "torch_cnn", "torch_resnet:width=8"]

USER_MODULE = """
import torch
from torch import nn


def make_model(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * h * w, num_classes),
    )
"""


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    data = load_dataset("digits_images", seed=0, num_clients=5)
    clients = partition("iid", data.y_train, 5, child_rng(0, "partition"), None)
    clients[0] = clients[0][:7]  # unequal client sizes: padded, masked batches
    return data, clients


def _plan(clients: list[np.ndarray], steps: list[int], batch_size: int = 16):  # type: ignore[no-untyped-def]
    plan = plan_round(
        clients, np.arange(len(clients)), epochs=2, batch_size=batch_size, seed=0, round_index=1
    )
    return plan.with_steps(np.minimum(plan.full_steps, steps))


CFG = LocalConfig(lr=0.05, momentum=0.9, weight_decay=1e-3, mu=0.1)


@pytest.mark.parametrize("spec", BUILT_IN)
def test_vmap_clients_equal_the_per_client_loop(digits, spec: str) -> None:  # type: ignore[no-untyped-def]
    data, clients = digits
    model = build_model(spec, data.num_features, data.num_classes, input_shape=data.input_shape)
    params = model.init(child_rng(0, "init"))
    plan = _plan(clients, [3, 4, 1, 5, 2])  # different step counts: the active prefix shrinks
    momentum = child_rng(0, "m").normal(0, 0.01, (5, model.num_params)).astype(np.float32)
    fast = model.train_vmap(params, data.X_train, data.y_train, plan, CFG, momentum, chunk_size=2)
    slow = model.train_loop(params, data.X_train, data.y_train, plan, CFG, momentum)
    np.testing.assert_allclose(fast.params, slow.params, atol=2e-6, rtol=0)
    np.testing.assert_allclose(fast.momentum, slow.momentum, atol=2e-6, rtol=0)
    np.testing.assert_allclose(fast.train_loss, slow.train_loss, rtol=1e-5)
    assert not np.allclose(fast.params, params[None])  # it trained
    assert np.array_equal(fast.num_samples, plan.sizes)


def test_torch_mlp_follows_the_numpy_mlp_from_the_same_draws(digits) -> None:  # type: ignore[no-untyped-def]
    data, clients = digits
    numpy_mlp = build_model("mlp:hidden=32", data.num_features, data.num_classes)
    torch_mlp = build_model("torch_mlp:hidden=32", data.num_features, data.num_classes)
    p_np, p_t = numpy_mlp.init(child_rng(3, "init")), torch_mlp.init(child_rng(3, "init"))
    assert numpy_mlp.evaluate(p_np, data.X_test, data.y_test) == pytest.approx(
        torch_mlp.evaluate(p_t, data.X_test, data.y_test), abs=1e-6
    )
    plan = _plan(clients, [6, 6, 6, 6, 6])
    a = train_clients(numpy_mlp, p_np, data.X_train, data.y_train, plan, CFG)
    b = torch_mlp.train_round(p_t, data.X_train, data.y_train, plan, CFG)
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-5)
    for row in range(5):
        acc_np = numpy_mlp.evaluate(a.params[row], data.X_test, data.y_test)
        acc_t = torch_mlp.evaluate(b.params[row], data.X_test, data.y_test)
        assert acc_np == pytest.approx(acc_t, abs=1e-4)


def test_numpy_and_torch_mlp_runs_agree_round_by_round() -> None:
    shared = {"dataset": "digits_images", "num_clients": 6, "rounds": 5, "seed": 2}
    a = run_simulation(RunSpec(model="mlp:hidden=32", **shared))
    b = run_simulation(RunSpec(model="torch_mlp:hidden=32", **shared))
    assert a.status == b.status == "complete"
    for ra, rb in zip(a.rounds, b.rounds, strict=True):
        assert ra["test_accuracy"] == pytest.approx(rb["test_accuracy"], abs=1e-4)


def test_the_same_spec_gives_bit_identical_metrics_in_a_fresh_process(tmp_path: Path) -> None:
    code = (
        "import json; from velocity.spec import RunSpec; "
        "from velocity.simulation import run_simulation; "
        "r = run_simulation(RunSpec(dataset='digits_images', model='torch_cnn:channels=4', "
        "num_clients=4, rounds=2, seed=5)); "
        "print(json.dumps([[x['test_loss'], x['train_loss']] for x in r.rounds]), "
        "r.final_params.tobytes().hex()[:4096])"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip()
    # ...and the run did not leave torch's global generator or thread count changed.
    before = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    run_simulation(RunSpec(dataset="digits_images", model="torch_cnn:channels=4", rounds=1))
    assert torch.equal(before, torch.random.get_rng_state())
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("spec", BUILT_IN)
def test_every_torch_model_meets_the_model_contract(digits, spec: str) -> None:  # type: ignore[no-untyped-def]
    data, _ = digits
    model = build_model(spec, data.num_features, data.num_classes, input_shape=data.input_shape)
    a, b = model.init(child_rng(0, "init")), model.init(child_rng(0, "init"))
    c = model.init(child_rng(1, "init"))
    assert a.dtype == np.float32 and a.shape == (model.num_params,)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    X = data.X_test.copy()
    loss, acc = model.evaluate(a, data.X_test, data.y_test)
    assert np.isfinite(loss) and 0 <= acc <= 1 and np.array_equal(X, data.X_test)
    assert model.predict(a, data.X_test).shape == data.y_test.shape
    nan = np.full_like(a, np.nan)
    assert np.isnan(model.evaluate(nan, data.X_test, data.y_test)[1])


def test_without_torch_a_torch_model_is_one_line_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(InputError, match=r"model 'torch_cnn' needs PyTorch: pip install"):
        build_model("torch_cnn", 64, 10, input_shape=(1, 8, 8))


def test_the_cli_and_the_core_never_import_torch() -> None:
    code = (
        "import sys; from velocity.cli import main; sys.argv = ['velocity', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "from velocity.spec import RunSpec; RunSpec(model='torch_cnn', dataset='digits_images')\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().endswith("False")


def test_device_is_not_identity_and_cuda_without_a_gpu_is_refused() -> None:
    cpu = RunSpec(model="torch_cnn", dataset="digits_images")
    auto = RunSpec(model="torch_cnn", dataset="digits_images", device="auto")
    assert cpu.fingerprint == auto.fingerprint and auto.canonical()["device"] == "auto"
    assert "device" not in cpu.canonical()  # the default keeps older specs' canonical form
    with pytest.raises(Exception, match="device"):
        RunSpec(device="tpu")
    result = run_simulation(RunSpec(model="torch_mlp", dataset="digits", rounds=1, device="auto"))
    assert result.details["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device 'cuda': PyTorch sees no CUDA GPU"):
            run_simulation(RunSpec(model="torch_mlp", rounds=1, device="cuda"))
    with pytest.raises(InputError, match="needs a torch model"):
        run_simulation(RunSpec(model="mlp", rounds=1, device="cuda"))


def test_a_cnn_on_table_data_is_refused_with_what_it_needs() -> None:
    with pytest.raises(InputError, match="needs image data"):
        run_simulation(RunSpec(model="torch_cnn", dataset="digits", rounds=1))


def test_a_user_module_file_is_a_plugin_with_buffers_average_or_local(tmp_path: Path) -> None:
    (tmp_path / "bn_net.py").write_text(USER_MODULE)
    common = {"dataset": "digits_images", "num_clients": 4, "rounds": 2}
    spec = spec_from_mapping(
        {**common, "model": f"torch_module:path={tmp_path / 'bn_net.py'},factory=make_model"}
    )
    assert [p["name"] for p in spec.plugins] == ["bn_net.py"]  # hashed into the identity
    result = run_simulation(spec)
    assert result.status == "complete", result.error
    model = build_model(spec.model, 64, 10, input_shape=(1, 8, 8))
    assert not model.vectorize  # BatchNorm: trained per client (exact batch statistics)
    n_weights = model.num_weights
    assert model.num_params == n_weights + 8  # running mean and var of 4 channels, averaged
    initial = model.init(child_rng(0, "init"))
    assert not np.allclose(result.final_params[n_weights:], initial[n_weights:])
    local = spec_from_mapping(
        {**common, "model": f"torch_module:path={tmp_path / 'bn_net.py'},buffers=local"}
    )
    local_model = build_model(local.model, 64, 10, input_shape=(1, 8, 8))
    assert local_model.num_params == n_weights  # buffers stay with each client
    assert run_simulation(local).status == "complete"


def test_bad_user_modules_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "not_a_module.py").write_text("def make_model(shape, classes):\n    return 3\n")
    with pytest.raises(InputError, match=r"must return a torch\.nn\.Module, got int"):
        run_simulation(
            spec_from_mapping(
                {"model": f"torch_module:path={tmp_path / 'not_a_module.py'}", "rounds": 1}
            )
        )
    load_plugin(str(tmp_path / "not_a_module.py"))
    with pytest.raises(InputError, match="has no function 'build'"):
        build_model("torch_module:path=not_a_module.py,factory=build", 64, 10)
    with pytest.raises(Exception, match="exactly one of path"):
        build_model("torch_module", 64, 10)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def test_image_files_load_offline_from_each_on_disk_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    labels = np.arange(40) % 4
    (tmp_path / "img.gz").write_bytes(gzip.compress(_idx(images)))
    (tmp_path / "lab").write_bytes(_idx(labels))
    idx = load_dataset(f"idx_images:images={tmp_path / 'img.gz'},labels={tmp_path / 'lab'}", seed=0)
    assert idx.input_shape == (1, 6, 6) and idx.num_classes == 4

    cifar = np.concatenate([labels[:, None] % 10, rng.integers(0, 256, (40, 3072))], axis=1)
    (tmp_path / "data_batch_1.bin").write_bytes(cifar.astype(np.uint8).tobytes())
    data = load_dataset(f"cifar10_bin:path={tmp_path / 'data_batch_1.bin'}", seed=0)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10

    nhwc = rng.normal(size=(30, 5, 5, 3))
    np.savez(tmp_path / "imgs.npz", x=nhwc, y=np.arange(30) % 3)
    npz = load_dataset(f"npz_images:path={tmp_path / 'imgs.npz'}", seed=0)
    assert npz.input_shape == (3, 5, 5)
    spec = spec_from_mapping(
        {
            "dataset": f"npz_images:path={tmp_path / 'imgs.npz'}",
            "model": "torch_cnn",
            "rounds": 1,
            "num_clients": 3,
        }
    )
    assert spec.data_files[0]["path"].endswith("imgs.npz")  # hashed like every user file
    assert run_simulation(spec).status == "complete"
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="not a CIFAR-10 binary batch"):
        load_dataset(f"cifar10_bin:path={tmp_path / 'bad.bin'}", seed=0)


def test_a_user_module_can_come_from_an_importable_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fl_nets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "convs.py").write_text(USER_MODULE.replace("nn.BatchNorm2d(4), ", ""))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = spec_from_mapping(
        {"model": "torch_module:module=fl_nets.convs", "dataset": "digits_images", "rounds": 1}
    )
    assert [p["name"] for p in spec.plugins] == ["fl_nets.convs"]
    assert len(spec.plugins[0]["sha256"]) == 64
    result = run_simulation(spec)
    assert result.status == "complete", result.error
    model = build_model(spec.model, 64, 10, input_shape=(1, 8, 8))
    assert model.vectorize  # no BatchNorm: the clients train together


def test_dropout_draws_come_from_the_seed_tree_per_round_and_client(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, clients = digits
    (tmp_path / "drop_net.py").write_text(
        "from torch import nn\n\n\ndef make_model(shape, classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5),\n"
        "                         nn.Linear(32, classes))\n"
    )
    load_plugin(str(tmp_path / "drop_net.py"))
    model = build_model("torch_module:path=drop_net.py", 64, 10, input_shape=(1, 8, 8))
    assert not model.vectorize  # random draws in forward: one client at a time
    params = model.init(child_rng(0, "init"))
    plan = _plan(clients, [3, 3, 3, 3, 3])
    state = torch.random.get_rng_state()
    a = model.train_round(params, data.X_train, data.y_train, plan, CFG)
    b = model.train_round(params, data.X_train, data.y_train, plan, CFG)
    assert np.array_equal(a.params, b.params) and torch.equal(state, torch.random.get_rng_state())
    # A client's draws do not depend on which other clients share its round.
    alone = plan_round([clients[2]], [2], epochs=2, batch_size=16, seed=0, round_index=1)
    alone = alone.with_steps(np.array([3]))
    c = model.train_round(params, data.X_train, data.y_train, alone, CFG)
    assert np.array_equal(c.params[0], a.params[2])
