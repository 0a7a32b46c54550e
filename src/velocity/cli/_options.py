"""Command-line options shared by several commands: RunSpec fields as flags, the run store.

Declared once so ``velocity run`` and ``velocity sweep`` spell and document them the same way.
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = [
    "ACCOUNTANT",
    "BATCH_SIZE",
    "BYZANTINE",
    "CLIENTS_PER_ROUND",
    "CLIENT_MOMENTUM",
    "CLIENT_SAMPLING",
    "DATASET",
    "DELTA",
    "EVAL_EVERY",
    "LOCAL_EPOCHS",
    "LR",
    "MODEL",
    "NUM_CLIENTS",
    "PARTITION",
    "PLUGIN",
    "ROUNDS",
    "STORE",
    "TARGET_EPSILON",
]

DATASET: Any = typer.Option(None, "--dataset", help="Dataset spec, e.g. digits.")
PARTITION: Any = typer.Option(None, "--partition", help="Partition spec, e.g. dirichlet:alpha=0.3.")
NUM_CLIENTS: Any = typer.Option(None, "--num-clients", help="Number of clients.")
CLIENTS_PER_ROUND: Any = typer.Option(
    None, "--clients-per-round", help="Clients sampled per round."
)
ROUNDS: Any = typer.Option(None, "--rounds", help="Number of rounds.")
LOCAL_EPOCHS: Any = typer.Option(None, "--local-epochs", help="Local epochs.")
BATCH_SIZE: Any = typer.Option(None, "--batch-size", help="Local batch size.")
LR: Any = typer.Option(None, "--lr", help="Client learning rate.")
MODEL: Any = typer.Option(None, "--model", help="Model spec, e.g. mlp:hidden=64 or logreg.")
BYZANTINE: Any = typer.Option(
    None, "--byzantine", help="Malicious clients: fraction < 1 or a count."
)
EVAL_EVERY: Any = typer.Option(None, "--eval-every", help="Evaluate every N rounds.")
CLIENT_MOMENTUM: Any = typer.Option(
    None,
    "--client-momentum",
    help="Client SGD momentum buffer: 'reset' every round (default) or 'persistent' across rounds.",
)
STORE: Any = typer.Option(
    None, "--store", help="Run store file (default $VELOCITY_STORE or ~/.velocity/runs.db)."
)
PLUGIN: Any = typer.Option(
    None,
    "--plugin",
    help="A plug-in .py file or module to load (repeatable); added to the spec's plugins.",
)
CLIENT_SAMPLING: Any = typer.Option(
    None, "--client-sampling", help="Client sampling: fixed (default) or poisson."
)
DEVICE: Any = typer.Option(
    None, "--device", help="Where torch models compute: cpu (default), cuda or auto."
)
ACCOUNTANT: Any = typer.Option(
    None, "--accountant", help="Privacy accountant for a dp/ldp strategy: rdp (default) or pld."
)
DELTA: Any = typer.Option(
    None, "--delta", help="Delta the epsilon is reported at (default 1/num_clients^1.1)."
)
TARGET_EPSILON: Any = typer.Option(
    None, "--target-epsilon", help="Stop a private run before its epsilon would exceed this."
)
SYSTEM: Any = typer.Option(
    None,
    "--system",
    help="System heterogeneity, key=value,...: e.g. stragglers=0.9,speed_sigma=1.5.",
)
PARTIAL_WORK: Any = typer.Option(
    None, "--partial-work", help="Stragglers' partial updates: drop or keep (default by strategy)."
)
ASYNCHRONOUS: Any = typer.Option(
    None, "--async", help="Asynchronous protocol, e.g. fedbuff:buffer=10 or fedasync."
)
COMPRESSION: Any = typer.Option(
    None, "--compression", help="Upload compression, e.g. topk:fraction=0.01 or qsgd:levels=16."
)
