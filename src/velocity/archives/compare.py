"""Comparing a re-run with its archived records: per-round trajectories and run verdicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from velocity.records import is_timing
from velocity.sweepdir import SweepRun, values_match

__all__ = ["VERDICTS", "RunComparison", "compare_rounds", "compare_run", "values_match"]

VERDICTS = ("ok", "MISMATCH", "MISSING", "FAILED")


@dataclass
class RunComparison:
    """Verdict for one run: ``ok``, ``MISMATCH``, ``MISSING`` or ``FAILED``."""

    name: str
    verdict: str
    archived_status: str | None
    reproduced_status: str | None
    detail: str = ""
    first_difference: dict[str, Any] | None = None
    differences: int = 0
    reproduced_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "archived_status": self.archived_status,
            "reproduced_status": self.reproduced_status,
            "detail": self.detail,
            "first_difference": self.first_difference,
            "differences": self.differences,
            "reproduced_error": self.reproduced_error,
        }


def _metric_order(
    archived: Sequence[Mapping[str, Any]], reproduced: Sequence[Mapping[str, Any]]
) -> list[str]:
    order: list[str] = []
    for record in [*archived, *reproduced]:
        for key in record:
            if key not in order and not is_timing(key):
                order.append(key)
    return order


def _differences(
    archived: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    *,
    exact: bool,
    tolerance: float,
) -> Iterable[dict[str, Any]]:
    metrics = _metric_order(archived, reproduced)
    for index, (old, new) in enumerate(zip(archived, reproduced, strict=False)):
        for metric in metrics:
            if not values_match(old.get(metric), new.get(metric), exact=exact, tolerance=tolerance):
                yield {
                    "round": old.get("round", index + 1),
                    "metric": metric,
                    "archived": old.get(metric),
                    "reproduced": new.get(metric),
                }


def _first_difference(
    archived: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    *,
    exact: bool,
    tolerance: float,
) -> dict[str, Any] | None:
    return next(iter(_differences(archived, reproduced, exact=exact, tolerance=tolerance)), None)


def compare_rounds(
    archived: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    *,
    exact: bool,
    tolerance: float,
) -> tuple[dict[str, Any] | None, int]:
    """First difference and number of differing values between two per-round trajectories
    (every metric but timings); a different number of rounds is a difference too."""
    found = list(_differences(archived, reproduced, exact=exact, tolerance=tolerance))
    if len(archived) != len(reproduced):
        shorter = min(len(archived), len(reproduced))
        found.append(
            {
                "round": shorter + 1,
                "metric": "rounds",
                "archived": len(archived),
                "reproduced": len(reproduced),
            }
        )
    return (found[0] if found else None), len(found)


def _format_value(value: Any) -> str:
    return "missing" if value is None else repr(value)


def compare_run(
    archived: SweepRun,
    reproduced_status: str | None,
    reproduced_rounds: Sequence[Mapping[str, Any]] | None,
    *,
    exact: bool,
    tolerance: float,
    reproduced_error: str | None = None,
) -> RunComparison:
    """Verdict for one run: same status (a failed run failing with the same exception type)
    and same trajectory, else where it first differs."""
    verdict = RunComparison(
        archived.name, "ok", archived.status, reproduced_status, reproduced_error=reproduced_error
    )
    if archived.status is None or archived.rounds is None:
        verdict.verdict = "MISSING"
        verdict.detail = "the archive holds no results for this run"
        if reproduced_status is not None:
            verdict.detail += f" (re-run: {reproduced_status})"
        return verdict
    if reproduced_status is None or reproduced_rounds is None:
        verdict.verdict = "MISSING"
        verdict.detail = "the re-run produced no results for this run"
        return verdict
    first, count = compare_rounds(
        archived.rounds, reproduced_rounds, exact=exact, tolerance=tolerance
    )
    verdict.first_difference, verdict.differences = first, count
    if reproduced_status != archived.status:
        verdict.differences += 1
        verdict.verdict = "FAILED" if reproduced_status == "failed" else "MISMATCH"
        verdict.detail = f"status {archived.status} archived, {reproduced_status} now"
        if reproduced_status == "failed" and reproduced_error:
            verdict.detail += f": {reproduced_error}"
        elif first is not None:
            verdict.detail += "; " + _describe_difference(first)
        return verdict
    if archived.status == "failed" and _error_type(archived.error) != _error_type(reproduced_error):
        # The message wording may change between versions; the kind of failure may not.
        verdict.differences += 1
        verdict.verdict = "MISMATCH"
        verdict.detail = (
            f"failed differently: archived {_format_value(archived.error)}, "
            f"now {_format_value(reproduced_error)}"
        )
        return verdict
    if first is not None:
        verdict.verdict = "MISMATCH"
        verdict.detail = _describe_difference(first)
        if count > 1:
            verdict.detail += f" ({count} differences)"
    return verdict


def _error_type(error: str | None) -> str | None:
    """The exception type of a recorded error (the sweep writes them as 'Type: message')."""
    if error is None:
        return None
    return error.split(":", 1)[0].strip()


def _describe_difference(first: Mapping[str, Any]) -> str:
    if first["metric"] == "rounds":
        return f"{first['archived']} rounds archived, {first['reproduced']} now"
    return (
        f"round {first['round']} {first['metric']}: archived "
        f"{_format_value(first['archived'])}, now {_format_value(first['reproduced'])}"
    )
