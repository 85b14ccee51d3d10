"""The DAG files import cleanly and build the shape operators rely on."""

from pathlib import Path

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
    assert dag.max_active_runs >= 1
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
