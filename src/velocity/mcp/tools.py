"""The MCP server's tools and resources, independent of the SDK: argument models, handlers
that call the public API (``velocity.run``, ``sweep``, ``leaderboard``, ``archive``,
``reproduce``, ``inspect``) inside the workspace, and JSON-able results.

A handler raises :class:`velocity.InputError` with the CLI's one-line message for bad input;
``velocity.mcp.server`` turns that into an MCP error result.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from velocity.artifacts import encode_floats
from velocity.errors import InputError
from velocity.mcp.jobs import SweepJob, SweepJobs
from velocity.mcp.schemas import arguments_schema, param_schema, parse_arguments, run_spec_schema
from velocity.mcp.workspace import REPRODUCTIONS, SWEEPS, ServerLimits, Workspace
from velocity.records import run_name_problem

if TYPE_CHECKING:
    from velocity.archives import ArchivedSweep
    from velocity.registry import Entry
    from velocity.spec import RunSpec
    from velocity.sweeps import SweepResult

__all__ = ["RESOURCE_FILES", "Progress", "ToolDef", "Toolbox"]

Progress = Callable[[float, float | None, str], None]
"""``progress(done, total, message)``: reported to the client while a tool works."""

RESOURCE_FILES = {"comparison.md": "text/markdown", "report.html": "text/html"}
"""A finished sweep's reports, served as ``velocity://sweeps/<id>/<file>``."""
_URI_PREFIX = "velocity://sweeps/"

COMPONENT_KINDS = ("datasets", "partitions", "models", "strategies", "attacks")


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ListComponentsArgs(_Args):
    kind: Literal["datasets", "partitions", "models", "strategies", "attacks"] | None = Field(
        None, description="only this kind of component (default: all)"
    )


class _SpecSource(_Args):
    spec: dict[str, Any] | None = Field(None, description="one run (RunSpec fields)")
    toml: str | None = Field(
        None, description="an experiment file's text: [shared], [[runs]], [matrix]"
    )
    path: str | None = Field(None, description="an experiment TOML file inside the workspace")


class ValidateSpecArgs(_SpecSource):
    check_data: bool = Field(
        True,
        description="also check each run against its data (dataset files, partition sizes), "
        "as 'velocity run' does before round 1",
    )


class RunArgs(_Args):
    spec: dict[str, Any] = Field(description="the run (RunSpec fields; omitted ones default)")


class SweepArgs(_Args):
    experiment: str | None = Field(None, description="an experiment TOML file inside the workspace")
    toml: str | None = Field(None, description="an experiment file's text")
    runs: list[dict[str, Any]] | None = Field(None, description="the runs, as RunSpecs")
    strategies: list[str] | None = Field(
        None, description="ad-hoc matrix: strategy specs (like velocity sweep --strategies)"
    )
    attacks: list[str] | None = Field(
        None, description="ad-hoc matrix: attack specs; adds no-attack baselines"
    )
    seeds: int | list[int] | None = Field(
        None, description="ad-hoc matrix: a seed count N (seeds 0..N-1) or a list of seeds"
    )
    overrides: dict[str, Any] | None = Field(
        None,
        description="RunSpec fields set on every run (the shared fields of an ad-hoc matrix)",
    )
    name: str | None = Field(
        None, description="the sweep's id and folder name under sweeps/ (default: a timestamp)"
    )
    resume: str | None = Field(
        None, description="finish this interrupted sweep (id or folder) instead of a new one"
    )
    parallel: int | None = Field(
        None, ge=1, description="worker processes (default and maximum: --max-parallel)"
    )
    target: float = Field(0.9, description="accuracy target for 'rounds to target' in the report")


class SweepRef(_Args):
    sweep: str = Field(description="a sweep id (from the sweep tool) or a sweep folder")


class SweepStatusArgs(_Args):
    sweep: str | None = Field(
        None, description="a sweep id or folder (default: list every sweep under sweeps/)"
    )


class LeaderboardArgs(_Args):
    sweep: str | None = Field(
        None, description="rank this sweep's runs (default: every run in the workspace's store)"
    )
    metric: str = Field("accuracy", description="what to rank by")
    target: float = Field(0.9, description="accuracy target for rounds-to-target")
    dataset: str | None = Field(None, description="only runs on this dataset")
    attack: str | None = Field(None, description="only runs under this attack ('none': no attack)")


class ShowRunArgs(_Args):
    run: str = Field(description="a stored run's id, id prefix (>= 4 characters) or name")


class ArchiveArgs(_Args):
    sweep: str = Field(description="a finished sweep (id or folder)")
    output: str | None = Field(
        None, description="archive file inside the workspace (default: <sweep>.crate.zip)"
    )
    author: str | None = Field(None, description="author's name (a Person)")
    affiliation: str | None = Field(None, description="author's organization")
    affiliation_url: str | None = Field(None, description="URL of that organization")
    license: str = Field("CC-BY-4.0", description="SPDX license identifier of the archive")
    allow_incomplete: bool = Field(False, description="archive an unfinished sweep")


class ArchiveRef(_Args):
    archive: str = Field(description="a .crate.zip inside the workspace")


class ReproduceArgs(_Args):
    archive: str = Field(description="a .crate.zip inside the workspace")
    out: str | None = Field(
        None, description="folder for the re-run (default: reproductions/<timestamp>-reproduce)"
    )
    check: bool = Field(True, description="the verdict counts: exit_code 1 on any mismatch")
    exact: bool = Field(False, description="require bitwise-equal metrics")
    tolerance: float | None = Field(None, description="relative tolerance (default 1e-6)")
    runs: list[str] | None = Field(None, description="only these runs")
    parallel: int | None = Field(None, ge=1, description="worker processes (<= --max-parallel)")


@dataclass(frozen=True)
class ToolDef:
    """One tool: its name, what it does, its arguments and how to answer it."""

    name: str
    description: str
    args: type[BaseModel]
    handler: Callable[[Any, Progress | None], dict[str, Any]]
    read_only: bool
    idempotent: bool
    embedded: Callable[[], dict[str, dict[str, Any]]] | None = None

    def input_schema(self) -> dict[str, Any]:
        return arguments_schema(self.args, **(self.embedded() if self.embedded else {}))


def _spec_embedded() -> dict[str, dict[str, Any]]:
    return {"spec": run_spec_schema()}


def _sweep_embedded() -> dict[str, dict[str, Any]]:
    spec = run_spec_schema()
    partial = {**spec, "description": "RunSpec fields set on every run"}
    return {"runs": {"type": "array", "items": spec}, "overrides": partial}


def _leaderboard_embedded() -> dict[str, dict[str, Any]]:
    from velocity.leaderboards import LEADERBOARD_METRICS

    return {"metric": {"enum": list(LEADERBOARD_METRICS), "default": "accuracy"}}


def _param_rows(entry: Entry[Any]) -> list[dict[str, Any]]:
    from velocity.registry import REQUIRED

    return [
        {
            "name": p.name,
            "type": p.type.__name__,
            "default": None if p.default is REQUIRED else p.default,
            "required": p.default is REQUIRED,
            "allowed": p.allowed(),
            "doc": p.doc,
            "schema": param_schema(p),
        }
        for p in entry.params
    ]


def _entry_row(entry: Entry[Any]) -> dict[str, Any]:
    return {
        "name": entry.name,
        "summary": entry.summary,
        "paper": entry.paper,
        "params": _param_rows(entry),
    }


class Toolbox:
    """Every tool of the server, bound to one workspace, its limits and its sweeps."""

    def __init__(
        self, workspace: Workspace, limits: ServerLimits, *, allow_plugins: bool = False
    ) -> None:
        from velocity.plugins import set_load_guard

        self.workspace = workspace
        self.limits = limits
        self.allow_plugins = allow_plugins
        self.jobs = SweepJobs(limits.max_sweeps)
        set_load_guard(workspace.plugin_guard(allow_plugins))
        self.tools: dict[str, ToolDef] = {
            tool.name: tool
            for tool in (
                ToolDef(
                    "list_components",
                    "Datasets, partitions, models, strategies (pre-aggregators, aggregators, "
                    "server optimizers, presets) and attacks, with their parameters, defaults, "
                    "allowed values and papers.",
                    ListComponentsArgs,
                    self._list_components,
                    read_only=True,
                    idempotent=True,
                ),
                ToolDef(
                    "validate_spec",
                    "Validate one run (spec), an experiment's text (toml) or an experiment "
                    "file (path) exactly as the CLI does: the canonical spec and fingerprint "
                    "of every run, or the CLI's one-line error naming the field. Also says "
                    "whether the runs fit this server's limits. Runs nothing.",
                    ValidateSpecArgs,
                    self._validate_spec,
                    read_only=True,
                    idempotent=True,
                    embedded=_spec_embedded,
                ),
                ToolDef(
                    "run",
                    "Run one federated training run to the end (rounds and clients capped by "
                    "the server) and record it in the workspace's run store; returns its status, "
                    "final metrics and per-round records.",
                    RunArgs,
                    self._run,
                    read_only=False,
                    idempotent=False,
                    embedded=_spec_embedded,
                ),
                ToolDef(
                    "sweep",
                    "Start a sweep in the background into sweeps/<id>/ of the workspace and "
                    "return its id at once; poll sweep_status. Runs come from an experiment "
                    "file, its text, a list of RunSpecs or an ad-hoc strategies x attacks x "
                    "seeds matrix. resume finishes an interrupted sweep.",
                    SweepArgs,
                    self._sweep,
                    read_only=False,
                    idempotent=False,
                    embedded=_sweep_embedded,
                ),
                ToolDef(
                    "sweep_status",
                    "A sweep's state (running, finished, cancelled, error), its counts and, once "
                    "finished, every run's outcome and the report resources; without a sweep, "
                    "every sweep in the workspace.",
                    SweepStatusArgs,
                    self._sweep_status,
                    read_only=True,
                    idempotent=True,
                ),
                ToolDef(
                    "cancel_sweep",
                    "Stop a running sweep started by this server: its workers stop, finished "
                    "runs are kept and the folder stays resumable (sweep with resume). Deletes "
                    "nothing.",
                    SweepRef,
                    self._cancel_sweep,
                    read_only=False,
                    idempotent=True,
                ),
                ToolDef(
                    "leaderboard",
                    "Rank configurations over seeds (mean, std, 95% CI, Welch's t-test against "
                    "the best with Holm's correction) for a sweep, or for every run in the "
                    "workspace's store.",
                    LeaderboardArgs,
                    self._leaderboard,
                    read_only=True,
                    idempotent=True,
                    embedded=_leaderboard_embedded,
                ),
                ToolDef(
                    "show_run",
                    "One stored run: status, spec, final and best metrics, per-round records.",
                    ShowRunArgs,
                    self._show_run,
                    read_only=True,
                    idempotent=True,
                ),
                ToolDef(
                    "archive",
                    "Pack a finished sweep into one deterministic RO-Crate zip inside the "
                    "workspace (never overwriting a file).",
                    ArchiveArgs,
                    self._archive,
                    read_only=False,
                    idempotent=False,
                ),
                ToolDef(
                    "inspect_archive",
                    "What an archive holds and whether it verifies, without running anything.",
                    ArchiveRef,
                    self._inspect_archive,
                    read_only=True,
                    idempotent=True,
                ),
                ToolDef(
                    "reproduce",
                    "Verify an archive, re-run its runs with the archived specs into the "
                    "workspace and compare them run by run; with check, exit_code 1 means a "
                    "mismatch (the verdict, not an error).",
                    ReproduceArgs,
                    self._reproduce,
                    read_only=False,
                    idempotent=False,
                ),
            )
        }

    # ------------------------------------------------------------------ entry points

    def call(
        self, name: str, arguments: Mapping[str, Any] | None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Answer one tool call (InputError for bad input, KeyError for an unknown tool)."""
        tool = self.tools[name]
        args = parse_arguments(tool.args, name, dict(arguments or {}))
        return dict(encode_floats(tool.handler(args, progress)))

    def close(self) -> None:
        """Cancel the running sweeps and wait for them; remove the plug-in guard."""
        from velocity.plugins import set_load_guard

        self.jobs.shutdown()
        set_load_guard(None)

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _relative_plugins(self) -> Iterator[None]:
        from velocity.plugins import base_dir

        with base_dir(self.workspace.root):
            yield

    def _checked(self, specs: Sequence[RunSpec], *, limits: bool = True) -> list[RunSpec]:
        """``specs`` whose files lie inside the workspace and, with ``limits``, within the
        server's limits."""
        for spec in specs:
            self.workspace.check_spec_paths(spec)
        if limits:
            self.limits.check_specs(specs)
        return list(specs)

    def _specs(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        toml: str | None = None,
        path: str | None = None,
        runs: Sequence[Mapping[str, Any]] | None = None,
        matrix: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        what: str = "spec",
        limits: bool = True,
    ) -> list[RunSpec]:
        """The RunSpecs of exactly one source, validated by the CLI's own loaders."""
        from velocity.experiment import expand_experiment, load_experiment, specs_from_flags
        from velocity.spec import spec_from_mapping

        given = [
            key
            for key, value in (
                ("spec", spec),
                ("toml", toml),
                ("path" if what == "spec" else "experiment", path),
                ("runs", runs),
                ("strategies/attacks/seeds", matrix),
            )
            if value is not None
        ]
        if len(given) != 1:
            options = (
                "spec, toml or path"
                if what == "spec"
                else "experiment, toml, runs, or strategies/attacks/seeds"
            )
            shown = ", ".join(given) if given else "none"
            raise InputError(f"{what}: give exactly one of {options} (got {shown})")
        extra = dict(overrides or {})
        with self._relative_plugins():
            if path is not None:
                label = "path" if what == "spec" else "experiment"
                file = self.workspace.existing_file(path, label)
                return self._checked(load_experiment(file, extra), limits=limits)
            if toml is not None:
                try:
                    doc = tomllib.loads(toml)
                except tomllib.TOMLDecodeError as exc:
                    raise InputError(f"toml: invalid TOML ({exc})") from None
                return self._checked(expand_experiment(doc, "toml", extra), limits=limits)
            if spec is not None:
                return self._checked([spec_from_mapping({**spec, **extra}, "spec")], limits=limits)
            if runs is not None:
                if not runs:
                    raise InputError("runs: give at least one run")
                return self._checked(
                    [spec_from_mapping({**r, **extra}, f"runs[{i}]") for i, r in enumerate(runs)],
                    limits=limits,
                )
            assert matrix is not None
            return self._checked(specs_from_flags(**matrix, shared=extra), limits=limits)

    def _store_for_reading(self) -> Path:
        path = self.workspace.store_path
        if not path.is_file():
            raise InputError(
                "no run store in this workspace yet (use the run or sweep tool first)",
                source=self.workspace.show(path),
            )
        return path

    def _job_id(self, folder: Path) -> str:
        sweeps = self.workspace.root / SWEEPS
        return folder.name if folder.parent == sweeps else self.workspace.show(folder)

    def _uris(self, job_id: str) -> dict[str, str]:
        if run_name_problem(job_id) is not None:
            return {}
        return {name: f"{_URI_PREFIX}{job_id}/{name}" for name in RESOURCE_FILES}

    # ------------------------------------------------------------------ tools

    def _list_components(self, args: ListComponentsArgs, _: Progress | None) -> dict[str, Any]:
        from velocity.attacks import ATTACKS, describe_attacks
        from velocity.data import DATASETS, PARTITIONERS, describe_datasets
        from velocity.models import MODELS
        from velocity.strategies.catalog import describe_strategies

        kinds = [args.kind] if args.kind else list(COMPONENT_KINDS)
        out: dict[str, Any] = {}
        if "datasets" in kinds:
            out["datasets"] = [
                {
                    **_entry_row(DATASETS.get(row["name"])),
                    "samples": row["samples"],
                    "features": row["features"],
                    "classes": row["classes"],
                    "user_data": bool(DATASETS.get(row["name"]).extra.get("user_data")),
                }
                for row in describe_datasets()
            ]
        if "partitions" in kinds:
            out["partitions"] = [_entry_row(e) for e in PARTITIONERS]
        if "models" in kinds:
            out["models"] = [_entry_row(e) for e in MODELS]
        if "strategies" in kinds:
            catalog = describe_strategies()
            out["strategies"] = {
                "entries": catalog["entries"],
                "presets": catalog["presets"],
                "syntax": "a preset ('fedavg'), a stage ('krum:f=2') or a chain "
                "'pre > aggregator > server' ('nnm:f=2 > krum:f=2 > adam:lr=0.01')",
            }
        if "attacks" in kinds:
            out["attacks"] = [
                {
                    **_entry_row(ATTACKS.get(row["name"])),
                    "kind": row["kind"],
                    "omniscient": row["omniscient"],
                    "records": row["records"],
                }
                for row in describe_attacks()
            ]
        return out

    def _validate_spec(self, args: ValidateSpecArgs, _: Progress | None) -> dict[str, Any]:
        from velocity.simulation import validate_run

        specs = self._specs(spec=args.spec, toml=args.toml, path=args.path, limits=False)
        if args.check_data:
            for spec in specs:
                validate_run(spec)
        try:
            self.limits.check_specs(specs)
            over_limits = None
        except InputError as exc:
            over_limits = str(exc)
        return {
            "count": len(specs),
            "runs": [
                {"name": s.name, "fingerprint": s.fingerprint, "spec": s.canonical()} for s in specs
            ],
            "data_checked": args.check_data,
            "within_limits": over_limits is None,
            "limit_problem": over_limits,
            "limits": self.limits.to_json(),
        }

    def _run(self, args: RunArgs, progress: Progress | None) -> dict[str, Any]:
        import velocity
        from velocity.store import open_store

        (spec,) = self._specs(spec=args.spec)

        def on_round(record: dict[str, Any]) -> None:
            if progress is not None:
                accuracy = record.get("test_accuracy")
                shown = f", test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else ""
                progress(
                    float(record["round"]), float(spec.rounds), f"round {record['round']}{shown}"
                )

        with open_store(self.workspace.store_path) as store:
            result = velocity.run(spec, store=store, on_round=on_round)
            runs = store.list_runs()
        run_id = next(
            (
                r.run_id
                for r in reversed(runs)
                if r.fingerprint == spec.fingerprint and not r.source
            ),
            None,
        )
        return {
            "run_id": run_id,
            "name": spec.name,
            "fingerprint": spec.fingerprint,
            "spec": spec.canonical(),
            "status": result.status,
            "error": result.error,
            "final": result.final_metrics(),
            "rounds": result.rounds,
            "wall_seconds": result.wall_seconds,
        }

    def _sweep(self, args: SweepArgs, _: Progress | None) -> dict[str, Any]:
        import velocity
        from velocity.records import check_target_accuracy
        from velocity.sweepdir import sweep_specs
        from velocity.sweeps import default_out_dir, validate_sweep_request

        check_target_accuracy(args.target, "target")
        parallel = self.limits.parallel(args.parallel)
        store = self.workspace.store_path
        claim: Callable[[], None] | None = None
        if args.resume is not None:
            others = [
                k for k, v in args.model_dump().items() if k in _SOURCE_ARGS and v is not None
            ]
            if others or args.name is not None:
                raise InputError(
                    "sweep: resume takes the runs from the sweep folder; give no "
                    f"{', '.join([*others, *(['name'] if args.name else [])])}"
                )
            folder = self.workspace.sweep_folder(args.resume, "resume")
            if (job := self.jobs.by_folder(folder)) is not None and job.state == "running":
                raise InputError(f"resume: sweep {job.id!r} is still running")
            with self._relative_plugins():
                specs = self._checked(sweep_specs(folder))
            validate_sweep_request(specs, folder, parallel, True)

            def work(on_event: Callable[[dict[str, Any]], None]) -> SweepResult:
                return velocity.sweep(
                    (),
                    out=folder,
                    parallel=parallel,
                    resume=True,
                    store=store,
                    target=args.target,
                    on_event=on_event,
                )

        else:
            matrix = None
            if args.strategies is not None or args.attacks is not None or args.seeds is not None:
                matrix = {
                    "strategies": args.strategies,
                    "attacks": args.attacks,
                    "seeds": args.seeds,
                }
            specs = self._specs(
                toml=args.toml,
                path=args.experiment,
                runs=args.runs,
                matrix=matrix,
                overrides=args.overrides,
                what="sweep",
            )
            name = (
                args.name if args.name is not None else default_out_dir(self.workspace.sweeps).name
            )
            folder = self.workspace.new_folder(SWEEPS, name, "name")
            validate_sweep_request(specs, folder, parallel, False)

            def work(on_event: Callable[[dict[str, Any]], None]) -> SweepResult:
                return velocity.sweep(
                    specs,
                    out=folder,
                    parallel=parallel,
                    store=store,
                    target=args.target,
                    on_event=on_event,
                )

            def take_folder() -> None:
                # Taken before the thread starts, so two calls can never share one folder.
                try:
                    folder.mkdir(parents=True)
                except FileExistsError:
                    if any(folder.iterdir()):
                        raise InputError(
                            f"name: sweep folder {self.workspace.show(folder)!r} exists and is "
                            "not empty; choose another name"
                        ) from None

            claim = take_folder

        job = self.jobs.start(self._job_id(folder), folder, len(specs), work, claim=claim)
        return {
            "id": job.id,
            "folder": self.workspace.show(folder),
            "state": job.state,
            "runs": len(specs),
            "parallel": min(parallel, len(specs)),
            "resumed": args.resume is not None,
        }

    def _job_status(self, job: SweepJob) -> dict[str, Any]:
        status: dict[str, Any] = {
            "id": job.id,
            "folder": self.workspace.show(job.folder),
            "state": job.state,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "running": job.running,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "error": job.error,
        }
        result = job.result
        if result is not None:
            status.update(
                complete=result.complete,
                exit_code=result.exit_code,
                warnings=result.warnings,
                runs={
                    name: {
                        "status": o.status,
                        "error": o.error,
                        "fingerprint": o.fingerprint,
                        "final": o.final,
                        "resumed": o.resumed,
                    }
                    for name, o in result.results.items()
                },
                resources=self._uris(job.id),
            )
        return status

    def _folder_status(self, folder: Path) -> dict[str, Any]:
        from velocity.sweepdir import read_sweep

        job_id = self._job_id(folder)
        with self._relative_plugins():
            data = read_sweep(self.workspace.real_folder(folder, "sweep"))
        complete = bool(data.manifest.get("complete"))
        finished = [run for run in data.runs if run.complete]
        return {
            "id": job_id,
            "folder": self.workspace.show(folder),
            "state": "finished" if complete else "incomplete",
            "total": len(data.runs),
            "done": len(finished),
            "failed": sum(run.status == "failed" for run in finished),
            "running": 0,
            "started_at": data.manifest.get("started_at"),
            "finished_at": data.manifest.get("finished_at"),
            "complete": complete,
            "runs": {
                run.name: {
                    "status": run.status or "not finished",
                    "fingerprint": run.fingerprint,
                    "final": (run.summary or {}).get("final") if run.complete else None,
                }
                for run in data.runs
            },
            "resources": self._uris(job_id) if complete else {},
            "note": None if complete else "not finished: the sweep tool's resume finishes it",
        }

    def _find_job(self, ref: str) -> tuple[SweepJob | None, Path | None]:
        """The job this server runs under ``ref`` (an id or its folder), else the folder."""
        job = self.jobs.get(ref)
        if job is not None:
            return job, job.folder
        folder = self.workspace.sweep_folder(ref)
        return self.jobs.by_folder(folder), folder

    def _sweep_status(self, args: SweepStatusArgs, _: Progress | None) -> dict[str, Any]:
        if args.sweep is not None:
            job, folder = self._find_job(args.sweep)
            if job is not None:
                return self._job_status(job)
            assert folder is not None
            return self._folder_status(folder)
        listed: dict[str, dict[str, Any]] = {}
        for job in self.jobs.all():
            entry = self._job_status(job)
            entry.pop("runs", None)
            listed[job.id] = entry
        sweeps = self.workspace.root / SWEEPS
        if sweeps.is_dir():
            for folder in sorted(sweeps.iterdir()):
                if folder.name in listed or not (folder / "manifest.json").is_file():
                    continue
                try:
                    entry = self._folder_status(self.workspace.sweep_folder(folder.name))
                    entry.pop("runs", None)
                except InputError as exc:
                    entry = {"id": folder.name, "state": "unreadable", "error": str(exc)}
                listed[folder.name] = entry
        return {"sweeps": list(listed.values())}

    def _cancel_sweep(self, args: SweepRef, _: Progress | None) -> dict[str, Any]:
        job, _folder = self._find_job(args.sweep)
        if job is None:
            raise InputError(f"sweep: {args.sweep!r} was not started by this server")
        if job.state == "running":
            job.cancel.set()
            if job.thread is not None:
                job.thread.join(30)
        return self._job_status(job)

    def _leaderboard(self, args: LeaderboardArgs, _: Progress | None) -> dict[str, Any]:
        import velocity

        if args.sweep is not None:
            folder = self.workspace.sweep_folder(args.sweep)
            with self._relative_plugins():
                board = velocity.leaderboard(
                    folder,
                    metric=args.metric,
                    target=args.target,
                    dataset=args.dataset,
                    attack=args.attack,
                )
        else:
            board = velocity.leaderboard(
                None,
                metric=args.metric,
                target=args.target,
                dataset=args.dataset,
                attack=args.attack,
                store=self._store_for_reading(),
            )
        return board.to_dict()

    def _show_run(self, args: ShowRunArgs, _: Progress | None) -> dict[str, Any]:
        from velocity.store import open_store

        with open_store(self._store_for_reading()) as store:
            record = store.find_run(args.run).to_dict()
        if record.get("source"):
            record["source"] = self.workspace.show(Path(record["source"]))
        return record

    def _archive(self, args: ArchiveArgs, _: Progress | None) -> dict[str, Any]:
        import velocity
        from velocity.archives import default_archive_path

        folder = self.workspace.sweep_folder(args.sweep)
        job = self.jobs.by_folder(folder)
        if job is not None and job.state == "running":
            raise InputError(f"sweep: {job.id!r} is still running; archive it once it finished")
        if args.output is not None:
            target = self.workspace.path(args.output, "output")
        else:
            target = self.workspace.path(str(default_archive_path(folder)), "output")
        if target.exists() or target.is_symlink():
            raise InputError(
                f"output: {self.workspace.show(target)!r} exists; the MCP server never "
                "overwrites a file (give another output)"
            )
        with self._relative_plugins():
            result = velocity.archive(
                folder,
                target,
                author=args.author,
                affiliation=args.affiliation,
                affiliation_url=args.affiliation_url,
                license_id=args.license,
                allow_incomplete=args.allow_incomplete,
            )
        return {
            "archive": self.workspace.show(result.path),
            "sha256": result.sha256,
            "size": result.size,
            "runs": result.runs,
            "missing_runs": result.missing_runs,
            "warnings": result.warnings,
        }

    def _inspect_archive(self, args: ArchiveRef, _: Progress | None) -> dict[str, Any]:
        import velocity

        path = self.workspace.existing_file(args.archive, "archive")
        with self._relative_plugins():
            info = velocity.inspect(path).to_json()
        info["path"] = self.workspace.show(path)
        return info

    def _reproduce(self, args: ReproduceArgs, progress: Progress | None) -> dict[str, Any]:
        import velocity
        from velocity.sweeps import default_out_dir

        path = self.workspace.existing_file(args.archive, "archive")
        parallel = self.limits.parallel(args.parallel)
        if args.out is not None:
            out = self.workspace.path(args.out, "out")
        else:
            out = default_out_dir(self.workspace.path(REPRODUCTIONS, "out"), kind="reproduce")

        def within_limits(sweep: ArchivedSweep, *_: Any) -> None:
            # Called once the archive verified and before any run: the same limits as a sweep.
            runs = sweep.runs
            selected = [runs[n].spec for n in args.runs or sweep.order if n in runs]
            self._checked([spec for spec in selected if spec is not None])

        def on_event(event: dict[str, Any]) -> None:
            if progress is not None and event.get("event") == "run":
                progress(
                    float(event["done"]),
                    float(event["total"]),
                    f"{event['name']}: {event['status']}",
                )

        with self.jobs.slot("a reproduction"), self._relative_plugins():
            report = velocity.reproduce(
                path,
                check=args.check,
                exact=args.exact,
                tolerance=args.tolerance,
                out=out,
                runs=args.runs,
                parallel=parallel,
                on_event=on_event,
                on_verified=within_limits,
            )
        payload = report.to_json()
        payload["archive"] = self.workspace.show(path)
        payload["out_dir"] = self.workspace.show(report.out_dir)
        payload["reproduced"] = report.all_matched
        return payload

    # ------------------------------------------------------------------ resources

    def resources(self) -> list[dict[str, str]]:
        """The reports of every finished sweep under ``sweeps/``."""
        found = []
        sweeps = self.workspace.root / SWEEPS
        if not sweeps.is_dir():
            return []
        for folder in sorted(sweeps.iterdir()):
            job = self.jobs.by_folder(folder)
            if folder.is_symlink() or (job is not None and job.state == "running"):
                continue
            if run_name_problem(folder.name) is not None:
                continue
            for name, mime in RESOURCE_FILES.items():
                if (folder / name).is_file() and not (folder / name).is_symlink():
                    found.append(
                        {
                            "uri": f"{_URI_PREFIX}{folder.name}/{name}",
                            "name": f"{folder.name}/{name}",
                            "mime_type": mime,
                            "description": f"sweep {folder.name}: {name}",
                        }
                    )
        return found

    def resource_templates(self) -> list[dict[str, str]]:
        return [
            {
                "uri_template": f"{_URI_PREFIX}{{sweep_id}}/{name}",
                "name": name,
                "mime_type": mime,
                "description": f"a finished sweep's {name}",
            }
            for name, mime in RESOURCE_FILES.items()
        ]

    def read_resource(self, uri: str) -> tuple[str, str]:
        """``(text, mime type)`` of a sweep report; InputError for a refused or unknown URI."""
        if not uri.startswith(_URI_PREFIX):
            raise InputError(f"unknown resource {uri!r}; resources are {_URI_PREFIX}<id>/<file>")
        sweep_id, _, name = uri.removeprefix(_URI_PREFIX).partition("/")
        if name not in RESOURCE_FILES:
            raise InputError(
                f"unknown resource {uri!r}; a sweep offers {', '.join(RESOURCE_FILES)}"
            )
        if run_name_problem(sweep_id) is not None:
            raise InputError(f"resource {uri!r}: {sweep_id!r} is not a sweep id")
        job = self.jobs.get(sweep_id)
        if job is not None and job.state == "running":
            raise InputError(f"resource {uri!r}: sweep {sweep_id!r} is still running")
        folder = self.workspace.sweep_folder(sweep_id, "resource")
        file = self.workspace.path(f"{SWEEPS}/{sweep_id}/{name}", "resource")
        if not file.is_file() or not file.is_relative_to(folder):
            raise InputError(f"resource {uri!r}: sweep {sweep_id!r} has no {name} (not finished?)")
        return file.read_text(encoding="utf-8"), RESOURCE_FILES[name]


_SOURCE_ARGS = ("experiment", "toml", "runs", "strategies", "attacks", "seeds", "overrides")
