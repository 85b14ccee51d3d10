"""Operations tools, apart from the pipeline: the ``hfc`` CLI, the Airflow stack runner
(``hfc airflow up|down``), the night audit and the local embedded sites (``hfc site``)."""
