"""File-local ids to catalogue ids: the values the loader supplies for a batch of rows.

A file's references are local: ids of its companion file (same stem), of a file named in the
row (tracking), catalogue ids of a table, or links (the companion file's only row, or its row
with the same key). :func:`resolve` turns them into catalogue ids through the load's
:class:`~hfc_tasks.catalogue.state.IdMap` and reports, located, what points nowhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hfc_tasks.catalogue import readers
from hfc_tasks.catalogue.bulk import BulkRows, Rows
from hfc_tasks.catalogue.formats import KindSpec
from hfc_tasks.catalogue.readers import Problem
from hfc_tasks.catalogue.state import IdMap, LoadState
from hfc_tasks.catalogue.tables import Table, match_metadata, table_info


def _int_text(ids: np.ndarray, found: np.ndarray) -> np.ndarray:
    out = np.asarray(ids, dtype=np.int64).astype(str).astype(object)
    out[~found] = None
    return out


def resolve(state: LoadState, spec: KindSpec, table: Table, rows: Rows) -> tuple[dict[str, np.ndarray], dict]:
    """Catalogue values for the id columns of ``rows``; problems per file for what points nowhere."""
    problems: dict[str, list[Problem]] = {}
    n = len(rows)
    entries = [state.entries[state.file_no[name]] for name in rows.names]

    def problem(i_file: int, line, column, reason) -> None:
        found = problems.setdefault(rows.names[i_file], [])
        if len(found) < readers.MAX_PROBLEMS:
            found.append(Problem(rows.names[i_file], None if line is None else int(line), column, reason))

    def partners(kind: str, column: str) -> np.ndarray:
        """Per file, the number of its loaded companion file of ``kind`` (-1: problem recorded)."""
        out = np.full(len(entries), -1, dtype=np.int64)
        for i, e in enumerate(entries):
            p = state.partners(kind).of(e)
            if p is None:
                problem(i, None, column, f"no {kind} file for it in the manifest")
            elif p.name not in state.loaded:
                why = "was rejected" if p.name in state.rejected else "was not loaded"
                problem(i, None, column, f"its {kind} file {p.name} {why}")
            else:
                out[i] = state.file_no[p.name]
        return out

    def report_missing(missing: np.ndarray, column: str, why) -> None:
        for r in np.flatnonzero(missing)[: readers.MAX_PROBLEMS * 4]:
            problem(rows.file_idx[r], rows.lines[r], column, why(r))

    supplied: dict[str, np.ndarray] = {}
    for col in spec.columns:
        if col.target is None or col.embed:
            continue
        if col.ref and not col.ref_by:
            part = partners(col.ref, col.name)
            values = rows.values[col.target].to_numpy(dtype=float, na_value=np.nan)
            ids, found = state.idmaps[col.ref].lookup(part[rows.file_idx], values)
            bad = ~found & ~np.isnan(values) & (part[rows.file_idx] >= 0)
            names = [state.entries[p].name if p >= 0 else "" for p in part]
            report_missing(bad, col.name, lambda r, v=values, c=names: (
                f"id {int(v[r])} is not an id of {c[rows.file_idx[r]]}"))
            supplied[col.target] = _int_text(ids, found)
        elif col.ref_by:
            supplied[col.target] = _resolve_by_name(state, spec, rows, col, problem)
        elif col.ref_table:
            values = rows.values[col.target].to_numpy(dtype=float, na_value=np.nan)
            ref = table_info(state.cur, col.ref_table, state.tables)
            wanted = np.unique(values[~np.isnan(values)]).astype(np.int64)
            state.cur.execute(f"select {ref.pk} from hfc.{ref.name} where {ref.pk} = any(%s)", (wanted.tolist(),))
            known = np.array([r[0] for r in state.cur.fetchall()], dtype=np.int64)
            bad = ~np.isnan(values) & ~np.isin(values, known)
            report_missing(bad, col.name, lambda r, v=values, t=ref.name: (
                f"{int(v[r])} is not an id of hfc.{t} (the catalogue has no such row)"))
        elif col.fill_file and isinstance(rows, BulkRows):
            # Supplied only when the file left some empty (else the line's own text is COPYed).
            v = rows.values[col.target].to_numpy(dtype=object) if col.target in rows.values else None
            missing = np.ones(n, dtype=bool) if v is None else np.array(pd.isna(v), dtype=bool)
            if missing.any():
                names = np.array(rows.names, dtype=object)[rows.file_idx]
                supplied[col.target] = names if v is None else np.where(missing, names, v)
    for link in spec.links:
        part = partners(link.kind, link.target)
        if link.by is None:
            ids = np.zeros(n, dtype=np.int64)
            for i, p in enumerate(part):
                if p < 0:
                    continue
                theirs = state.file_ids.get(int(p), np.empty(0))
                if len(theirs) != 1:
                    problem(i, None, None, f"{link.target}: its {link.kind} file {state.entries[p].name} has "
                            f"{len(theirs)} rows, exactly one is needed")
                else:
                    ids[rows.file_idx == i] = theirs[0]
            supplied[link.target] = _int_text(ids, np.ones(n, dtype=bool))
        else:
            mine, theirs = link.by
            for p in {int(p) for p in part if p >= 0}:
                if (p, theirs) not in state.file_keys:
                    _keys_from_catalogue(state, link.kind, theirs, p)
            keys = rows.values[f"@{mine}"].tolist()
            ids = np.zeros(n, dtype=np.int64)
            found = np.zeros(n, dtype=bool)
            for r, key in enumerate(keys):
                p = part[rows.file_idx[r]]
                if p < 0:
                    continue
                got = state.file_keys.get((int(p), theirs), {}).get(key)
                if got is None:
                    problem(rows.file_idx[r], rows.lines[r], mine,
                            f"{key!r} is not the {theirs} of any row of {state.entries[p].name}")
                else:
                    ids[r], found[r] = got, True
            supplied[link.target] = _int_text(ids, found)
    for embedded, target in spec.embeds:
        meta = dict(spec.embed_keys)[embedded]
        columns = {c.target: rows.values[c.target] for c in spec.embedded(embedded)}
        ids, new = match_metadata(state.cur, embedded, meta, columns)
        state.metadata_new[embedded] = state.metadata_new.get(embedded, 0) + new
        supplied[target] = _int_text(ids, np.ones(n, dtype=bool))
    if spec.table == "observations" and "qclk_fname" in rows.values:
        # The FRC leaves QCLK_URL empty; the quicklook's place on the archive is known only
        # here: clients open QCLK_URL + "/" + QCLK_FNAME.
        fname = rows.values["qclk_fname"].tolist()
        given = rows.values["qclk_url"].tolist() if "qclk_url" in rows.values else [None] * n
        url = [state.qclk.get(f) or g for f, g in zip(fname, given, strict=True)]
        supplied["qclk_url"] = np.array([None if pd.isna(u) else u for u in url], dtype=object)
    if "src_file" in table.columns:  # the file of each row, for provenance (migration 0003)
        supplied["src_file"] = np.array(rows.names, dtype=object)[rows.file_idx]
    if "local_id" in table.columns and "local_id" not in supplied:
        supplied["local_id"] = _int_text(np.nan_to_num(rows.local).astype(np.int64), ~np.isnan(rows.local))
    supplied["batch_id"] = np.full(n, str(state.batch_id), dtype=object)
    return supplied, problems


def _keys_from_catalogue(state: LoadState, kind: str, header: str, no: int) -> None:
    """The ``header`` values of a loaded file's rows, read back from the catalogue.

    A file COPYed by the bulk path was never parsed for the columns only COPY needed, so the
    loader kept no keys for a later kind's ``by`` link into it (a pre-processing output file
    without links: PR_LOCFNAME). Its rows are in this transaction already (the earlier kind's
    COPYs are flushed before the next kind); one query per file.
    """
    ids = state.file_ids.get(no)
    col = next((c for c in state.specs[kind].columns if header in c.headers and c.stored), None)
    if ids is None or col is None:
        return
    table = table_info(state.cur, state.specs[kind].table, state.tables)
    state.cur.execute(
        f"select {col.target}, {table.pk} from hfc.{table.name} where {table.pk} = any(%s)", (ids.tolist(),))
    state.file_keys[(no, header)] = dict(state.cur.fetchall())


def _resolve_by_name(state: LoadState, spec: KindSpec, rows: Rows, col, problem) -> np.ndarray:
    """Local ids of the file named in each row (tracking files): in this load, or the catalogue."""
    by_col = next(c for c in spec.columns if c.name == col.ref_by)
    names = rows.values[by_col.target].tolist()
    values = rows.values[col.target].to_numpy(dtype=float, na_value=np.nan)
    target_spec = state.specs[col.ref]
    target = table_info(state.cur, target_spec.table, state.tables)
    idmap = state.idmaps[col.ref]
    nos = np.full(len(names), -1, dtype=np.int64)
    outside = sorted({n for n in names if isinstance(n, str) and n not in state.file_no})
    extra = IdMap()
    if outside:
        state.cur.execute(
            f"select feat_filename, local_id, {target.pk} from hfc.{target.name}"
            " where feat_filename = any(%s) and local_id is not null",
            (outside,),
        )
        got = state.cur.fetchall()
        pseudo = {name: len(state.entries) + i for i, name in enumerate(outside)}
        if got:
            extra.add(np.array([pseudo[r[0]] for r in got]), np.array([r[1] for r in got]),
                      np.array([r[2] for r in got]))
    for r, name in enumerate(names):
        if not isinstance(name, str):
            continue
        if name in state.file_no:
            if name in state.loaded:
                nos[r] = state.file_no[name]
            else:
                why = "was rejected" if name in state.rejected else "is not loaded"
                problem(rows.file_idx[r], rows.lines[r], by_col.name, f"{col.ref} file {name} {why}")
        else:
            nos[r] = len(state.entries) + outside.index(name)
    inside = nos < len(state.entries)
    ids = np.zeros(len(names), dtype=np.int64)
    found = np.zeros(len(names), dtype=bool)
    if inside.any():
        i_ids, i_found = idmap.lookup(np.where(inside, nos, 0), values)
        ids, found = np.where(inside, i_ids, ids), inside & i_found & (nos >= 0)
    if (~inside).any():
        o_ids, o_found = extra.lookup(nos, values)
        ids = np.where(~inside, o_ids, ids)
        found |= ~inside & o_found
    for r in np.flatnonzero(~found & (nos >= 0) & ~np.isnan(values))[: readers.MAX_PROBLEMS * 4]:
        where = "this manifest" if nos[r] < len(state.entries) else "the catalogue"
        problem(rows.file_idx[r], rows.lines[r], col.name,
                f"id {int(values[r])} of {names[r]} is not in {where}")
    return _int_text(ids, found)
