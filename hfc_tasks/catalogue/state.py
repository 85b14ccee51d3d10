"""The state of one night's load (inside its transaction), and the two indexes it keeps.

:class:`LoadState`: the manifest's files numbered and grouped by kind, which are loaded or
rejected, the rows and warnings so far. :class:`Partners`: which companion file a file's
references point into. :class:`IdMap`: (file, file-local id) -> catalogue id of loaded rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from hfc_tasks import products as products_mod
from hfc_tasks.catalogue.formats import KindSpec
from hfc_tasks.catalogue.readers import Problem
from hfc_tasks.catalogue.tables import Table
from hfc_tasks.manifest import Entry


def _stem(product: products_mod.ProductName) -> tuple:
    return (product.code, product.version, product.stamp, product.observatory_tag)


class Partners:
    """Which file of a kind another file's references point into (indexed: nights of 10,000
    files pair in linear time).

    Data files (init/feat/obs/pp...) pair by their shared ``<code>_<ver>_<stamp>_<obs>`` stem;
    metadata files (no date in the name) by code and version, preferring the same observatory
    tag, then an untagged file, then the only file of that kind in the manifest.
    """

    def __init__(self, candidates: list[Entry]) -> None:
        self.dated = {_stem(c.product): c for c in candidates if c.product and c.product.stamp}
        self.undated = [c for c in candidates if c.product and not c.product.stamp]

    def of(self, entry: Entry) -> Entry | None:
        me = entry.product
        if me is None:
            return None
        found = self.dated.get(_stem(me))
        if found is not None:
            return found
        same = [c for c in self.undated if (c.product.code, c.product.version) == (me.code, me.version)]
        for pick in (
            [c for c in same if c.product.observatory_tag == me.observatory_tag],
            [c for c in same if c.product.observatory_tag is None],
            same if len(same) == 1 else [],
            self.undated if len(self.undated) == 1 else [],
        ):
            if len(pick) == 1:
                return pick[0]
        return None


class IdMap:
    """(file number, local id) -> catalogue id for the loaded files of one kind, looked up in bulk."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._keys = np.empty(0, dtype=np.int64)
        self._ids = np.empty(0, dtype=np.int64)

    @staticmethod
    def key(file_no, local) -> np.ndarray:
        return np.asarray(file_no, dtype=np.int64) * (1 << 33) + (np.asarray(local, dtype=np.int64) + (1 << 31))

    def add(self, file_no: np.ndarray, local: np.ndarray, catalogue: np.ndarray) -> None:
        self._parts.append((self.key(file_no, local), np.asarray(catalogue, dtype=np.int64)))

    def lookup(self, file_no: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(catalogue ids, found) for each (file, local id); NaN locals are not found."""
        if self._parts:
            keys = np.concatenate([self._keys, *(k for k, _ in self._parts)])
            ids = np.concatenate([self._ids, *(i for _, i in self._parts)])
            order = np.argsort(keys, kind="stable")
            self._keys, self._ids, self._parts = keys[order], ids[order], []
        local = np.asarray(local, dtype=float)
        valid = ~np.isnan(local)
        want = self.key(file_no, np.where(valid, local, 0))
        pos = np.searchsorted(self._keys, want)
        pos = np.minimum(pos, max(len(self._keys) - 1, 0))
        found = valid & (len(self._keys) > 0)
        if len(self._keys):
            found &= self._keys[pos] == want
        ids = np.where(found, self._ids[pos] if len(self._ids) else 0, 0)
        return ids, found


@dataclass
class LoadState:
    """The state of one load (inside its transaction)."""

    cur: object
    batch_id: int
    entries: list[Entry]
    specs: dict[str, KindSpec]
    qclk: dict[str, str]
    file_no: dict[str, int]
    by_kind: dict[str, list[Entry]]
    tables: dict[str, Table] = field(default_factory=dict)  # table name -> what the loader knows of it
    idmaps: dict[str, IdMap] = field(default_factory=dict)  # file kind -> ids of its loaded files
    file_ids: dict[int, np.ndarray] = field(default_factory=dict)  # file -> catalogue ids, row order
    file_keys: dict[tuple[int, str], dict] = field(default_factory=dict)  # (file, HEADER) -> key -> id
    loaded: set[str] = field(default_factory=set)
    rejected: dict[str, list[Problem]] = field(default_factory=dict)
    file_rows: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    metadata_new: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _partners: dict[str, Partners] = field(default_factory=dict)
    frc: str = ""  # for messages (ArchiveReadError)
    night: dt.date | None = None

    def partners(self, kind: str) -> Partners:
        if kind not in self._partners:
            self._partners[kind] = Partners(self.by_kind.get(kind, []))
        return self._partners[kind]

    def reject(self, name: str, problems: list[Problem]) -> None:
        self.rejected.setdefault(name, []).extend(problems)

    @property
    def tracking_only(self) -> bool:
        """A tracker's night: only tracking files (its counts say nothing of detections)."""
        present = [k for k, files in self.by_kind.items() if files]
        return bool(present) and all(self.specs[k].is_tracking for k in present)

    def needs_ids(self, kind: str) -> bool:
        """Whether a later kind of this load points at this kind's rows (then ids are reserved)."""
        return any(
            kind in spec.depends_on and self.by_kind.get(k) for k, spec in self.specs.items() if k != kind
        )

    def kind_of(self, spec: KindSpec) -> str:
        """The file kind this load reads with ``spec``."""
        return next(k for k, s in self.specs.items() if s is spec)
