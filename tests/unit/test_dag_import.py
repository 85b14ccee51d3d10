"""The DAG files import cleanly and build the shape operators rely on, on every site."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from hfc_tasks.registry import load_registry

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dagbag_imports_without_errors():
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags.get("hfc_nightly")
    assert dag is not None
    for frc in load_registry().enabled_frcs:
        ids = {f"{frc.name}.{t}" for t in ("submit", "wait", "archive", "catalogue")}
        assert ids <= set(dag.task_ids)
        assert dag.get_task(f"{frc.name}.wait").downstream_task_ids == {f"{frc.name}.archive"}
        assert dag.get_task(f"{frc.name}.wait").deferrable is True
        for dep in frc.after:
            assert f"{frc.name}.submit" in dag.get_task(f"{dep}.catalogue").downstream_task_ids
    assert dag.max_active_runs == 3
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert set(dag.params) >= {"night", "frcs"}


@pytest.mark.parametrize("site", ["local", "production"])
def test_dag_shape_per_site(site):
    # A fresh interpreter: the DAG reads HFC_SITE when it is parsed, as the dag-processor does.
    code = (
        "from airflow.dag_processing.dagbag import DagBag;"
        f"b=DagBag(dag_folder={str(DAGS)!r}); assert not b.import_errors, b.import_errors;"
        "d=b.dags['hfc_nightly'];"
        "import json; print('RESULT', json.dumps(sorted({t.split('.')[0] for t in d.task_ids})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HFC_SITE": site}).stdout
    groups = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert groups == sorted(f.name for f in load_registry().frcs_for(site))
