"""Archives: one RO-Crate zip per finished sweep, and its verified reproduction.

One module per job: ``crate`` writes the zip, ``safezip`` reads an untrusted one into memory,
``verify`` checks checksums and that every record agrees, ``compare`` compares trajectories,
``reproduce`` re-runs an archive through the sweep machinery, ``inspect`` describes one.
"""

from __future__ import annotations

from velocity.archives.compare import VERDICTS, RunComparison, compare_rounds, compare_run
from velocity.archives.crate import ArchiveResult, archive_sweep, default_archive_path
from velocity.archives.inspect import ArchiveInspection, inspect_archive
from velocity.archives.reproduce import (
    DEFAULT_TOLERANCE,
    PackageDrift,
    ReproductionReport,
    default_reproduce_dir,
    environment_drift,
    reproduce_archive,
)
from velocity.archives.safezip import ArchiveLimits, CrateContents, member_name_problem, read_crate
from velocity.archives.verify import ArchivedSweep, load_archived_sweep, verify_crate

__all__ = [
    "DEFAULT_TOLERANCE",
    "VERDICTS",
    "ArchiveInspection",
    "ArchiveLimits",
    "ArchiveResult",
    "ArchivedSweep",
    "CrateContents",
    "PackageDrift",
    "ReproductionReport",
    "RunComparison",
    "archive_sweep",
    "compare_rounds",
    "compare_run",
    "default_archive_path",
    "default_reproduce_dir",
    "environment_drift",
    "inspect_archive",
    "load_archived_sweep",
    "member_name_problem",
    "read_crate",
    "reproduce_archive",
    "verify_crate",
]
