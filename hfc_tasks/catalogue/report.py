"""What one load did: the report the operator, the CLI and the tests read."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from hfc_tasks import manifest as manifest_mod
from hfc_tasks.catalogue.grouping import group_problems, grouped_lines
from hfc_tasks.catalogue.readers import Problem


@dataclass(frozen=True)
class RejectedFile:
    file: str
    line: int | None
    column: str | None
    reason: str

    def __str__(self) -> str:
        return str(Problem(self.file, self.line, self.column, self.reason))


@dataclass
class LoadReport:
    frc: str
    night: dt.date
    batch_id: int
    rows: dict[str, int]  # catalogue rows loaded, per batch-owned table
    files_loaded: list[str]
    rejected: list[RejectedFile]  # one entry per problem; several may name the same file
    warnings: list[str]  # unknown columns, unsupported kinds, Latin-1 files...
    metadata_new: dict[str, int] = field(default_factory=dict)  # shared rows inserted, per table
    # The catalogue schema's version this load ran against (loads never migrate: hfc db upgrade).
    schema_version: str = ""
    seconds: float = 0.0
    status: str = "loaded"  # hfc.batch.status: loaded | partial | no_data
    issues: list[dict] = field(default_factory=list)  # hfc.batch.issues: the manifest's unmatched/stale notes

    @property
    def ok(self) -> bool:
        return not self.rejected

    @property
    def rejected_files(self) -> list[str]:
        return list(dict.fromkeys(r.file for r in self.rejected))

    def rejection_lines(self) -> list[str]:
        """The rejections grouped by column and kind of problem, one line each (not one per row):
        ``column RS: NULL in 28 rows of 4 files (a.csv lines 2-7, ...)``."""
        return grouped_lines(self.rejected)

    def to_dict(self) -> dict:
        """JSON-friendly (the operator's XCom, the CLI's --json)."""
        return {
            "frc": self.frc,
            "night": self.night.isoformat(),
            "batch_id": self.batch_id,
            "rows": dict(self.rows),
            "files_loaded": len(self.files_loaded),
            "rejected": [
                {"file": r.file, "line": r.line, "column": r.column, "reason": r.reason} for r in self.rejected
            ],
            "rejected_groups": [g.to_dict() for g in group_problems(self.rejected)],
            "warnings": list(self.warnings),
            "metadata_new": dict(self.metadata_new),
            "schema_version": self.schema_version,
            "seconds": round(self.seconds, 3),
            "status": self.status,
            "issues": list(self.issues),
        }

    def summary(self) -> str:
        rows = ", ".join(f"{k}={v}" for k, v in self.rows.items()) or "no rows"
        text = (
            f"batch {self.batch_id} ({self.frc} {self.night}): {rows}; "
            f"{len(self.files_loaded)} file(s) loaded in {self.seconds:.2f}s"
        )
        if self.status == "no_data":
            text += "; no data: the job ran and wrote no product"
        if self.issues:
            text += "; NOT CLEAN: " + "; ".join(manifest_mod.issue_text(i) for i in self.issues)
        if self.rejected:
            text += f"; {len(self.rejected_files)} file(s) REJECTED:\n  " + "\n  ".join(self.rejection_lines())
        return text
