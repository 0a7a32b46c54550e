"""Privacy accounting with Google's ``dp-accounting`` (the ``privacy`` extra, imported lazily).

One round of central DP is a Gaussian mechanism on the clipped sum, amplified by the round's
client sampling:

- ``poisson`` sampling: ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` under add/remove-one
  adjacency (a client's whole data present or absent), sensitivity ``clip_norm``;
- ``fixed``-size sampling: ``SampledWithoutReplacementDpEvent(N, k, GaussianDpEvent(z / 2))``
  under replace-one adjacency (the analysis of sampling without replacement, Wang, Balle and
  Kasiviswanathan 2019, needs it): replacing one client moves the clipped sum by up to
  ``2 clip_norm``, so the noise is ``z / 2`` times that sensitivity. With every client in every
  round, ``GaussianDpEvent(z / 2)``.

Rounds compose: epsilon after ``r`` rounds at ``delta``. RDP gives exactly what
``RdpAccountant(...).compose(event, r).get_epsilon(delta)`` gives (computed once per
configuration and scaled, as RDP composes linearly); PLD what a ``PLDAccountant`` composing one
``event`` per round gives. Local DP is a Gaussian mechanism per participation with the
replace-one sensitivity ``2 clip_norm`` (``GaussianDpEvent(z / 2)``), composed over the rounds
a client took part in, with no amplification (the server knows who sent what).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from velocity.errors import InputError
from velocity.federation import CLIENT_SAMPLINGS

__all__ = [
    "ACCOUNTANTS",
    "INSTALL_HINT",
    "PLD_DISCRETIZATION",
    "accounting_problem",
    "central_epsilons",
    "default_delta",
    "local_epsilons",
    "require_dp_accounting",
    "round_event",
]

ACCOUNTANTS = ("rdp", "pld")
"""Accountants by name: Renyi DP (default) and privacy loss distributions (tighter, slower)."""

INSTALL_HINT = "pip install 'velocity-fl[privacy]'"

PLD_DISCRETIZATION = 1e-4
"""``value_discretization_interval`` of the PLD accountant (dp-accounting's default)."""


def require_dp_accounting() -> ModuleType:
    """The ``dp_accounting`` module; InputError with the install command when it is missing."""
    try:
        import dp_accounting
    except ImportError:
        raise InputError(
            f"privacy accounting needs the dp-accounting package: {INSTALL_HINT}"
        ) from None
    return dp_accounting


def default_delta(num_clients: int) -> float:
    """The default delta, ``1 / num_clients^1.1`` (below 1 / the number of users)."""
    return float(1.0 / num_clients**1.1)


def _fixed_size(sampling: str) -> bool:
    return bool(CLIENT_SAMPLINGS.get(sampling).extra.get("fixed_size"))


def accounting_problem(
    accountant: str, sampling: str, num_clients: int, clients_per_round: int
) -> str | None:
    """Why this accountant cannot account this sampling (None when it can)."""
    if accountant not in ACCOUNTANTS:
        return f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}"
    if accountant == "pld" and _fixed_size(sampling) and clients_per_round < num_clients:
        return (
            "accountant 'pld' cannot account fixed-size client sampling (dp-accounting has no "
            "PLD for sampling without replacement); use client_sampling = 'poisson' or "
            "accountant = 'rdp'"
        )
    return None


def round_event(
    sampling: str, num_clients: int, clients_per_round: int, noise_multiplier: float
) -> tuple[Any, Any]:
    """``(DpEvent of one central-DP round, its NeighboringRelation)`` (see the module doc)."""
    dpa = require_dp_accounting()
    relation = dpa.NeighboringRelation
    if _fixed_size(sampling):
        gaussian = dpa.GaussianDpEvent(noise_multiplier / 2.0)
        if clients_per_round == num_clients:
            return gaussian, relation.REPLACE_ONE
        event = dpa.SampledWithoutReplacementDpEvent(num_clients, clients_per_round, gaussian)
        return event, relation.REPLACE_ONE
    q = clients_per_round / num_clients
    return dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(noise_multiplier)), (
        relation.ADD_OR_REMOVE_ONE
    )


@contextmanager
def _quiet_absl() -> Iterator[None]:
    # dp-accounting logs a warning for every fractional RDP order whose series does not
    # converge (the order is then skipped, as it should be): noise on every run's stderr.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _rdp_epsilons(event: Any, relation: Any, delta: float, counts: Sequence[int]) -> list[float]:
    require_dp_accounting()
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    accountant = rdp.RdpAccountant(neighboring_relation=relation)
    with _quiet_absl():
        accountant.compose(event, 1)
        one = np.array(accountant._rdp, dtype=np.float64)
        orders = accountant._orders
        # compose(event, c) adds c * (the event's RDP) to zeros: the same floats as c * one.
        return [
            0.0 if c == 0 else float(rdp.compute_epsilon(orders, c * one, delta)[0]) for c in counts
        ]


def _pld_of(event: Any, relation: Any) -> Any:
    """The PLD a PLDAccountant builds for one ``event`` (Gaussian or Poisson-sampled Gaussian)."""
    dpa = require_dp_accounting()
    from dp_accounting.pld import privacy_loss_distribution as pld

    if isinstance(event, dpa.PoissonSampledDpEvent):
        return pld.from_gaussian_mechanism(
            standard_deviation=event.event.noise_multiplier,
            value_discretization_interval=PLD_DISCRETIZATION,
            sampling_prob=event.sampling_probability,
            neighboring_relation=relation,
        ).self_compose(1)
    return pld.from_gaussian_mechanism(
        standard_deviation=event.noise_multiplier,
        value_discretization_interval=PLD_DISCRETIZATION,
        neighboring_relation=relation,
    )


def _pld_epsilons(event: Any, relation: Any, delta: float, counts: Sequence[int]) -> list[float]:
    require_dp_accounting()
    from dp_accounting.pld import privacy_loss_distribution as pld

    one = _pld_of(event, relation)
    running = pld.identity(value_discretization_interval=PLD_DISCRETIZATION)
    by_count = {0: 0.0}
    composed = 0
    with _quiet_absl():
        for c in sorted(set(counts)):
            while composed < c:
                running = running.compose(one)
                composed += 1
            if c:
                by_count[c] = float(running.get_epsilon_for_delta(delta))
    return [by_count[c] for c in counts]


def _epsilons(
    accountant: str, event: Any, relation: Any, delta: float, counts: Sequence[int]
) -> list[float]:
    if accountant == "rdp":
        return _rdp_epsilons(event, relation, delta, counts)
    return _pld_epsilons(event, relation, delta, counts)


@functools.lru_cache(maxsize=64)
def central_epsilons(
    accountant: str,
    sampling: str,
    num_clients: int,
    clients_per_round: int,
    noise_multiplier: float,
    delta: float,
    rounds: int,
) -> tuple[float, ...]:
    """Epsilon at ``delta`` after each of rounds 1..``rounds`` of central DP (``inf`` for
    ``noise_multiplier == 0``: clipping alone is no privacy)."""
    problem = accounting_problem(accountant, sampling, num_clients, clients_per_round)
    if problem is not None:
        raise InputError(problem)
    if noise_multiplier == 0:
        return (math.inf,) * rounds
    event, relation = round_event(sampling, num_clients, clients_per_round, noise_multiplier)
    return tuple(_epsilons(accountant, event, relation, delta, range(1, rounds + 1)))


@functools.lru_cache(maxsize=64)
def local_epsilons(
    accountant: str, noise_multiplier: float, delta: float, participations: int
) -> tuple[float, ...]:
    """Local-DP epsilon at ``delta`` of a client after 0..``participations`` rounds it took
    part in (index = participations)."""
    if accountant not in ACCOUNTANTS:
        raise InputError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    if noise_multiplier == 0:
        return (0.0, *(math.inf,) * participations)
    dpa = require_dp_accounting()
    event = dpa.GaussianDpEvent(noise_multiplier / 2.0)
    relation = dpa.NeighboringRelation.REPLACE_ONE
    return tuple(_epsilons(accountant, event, relation, delta, range(participations + 1)))
