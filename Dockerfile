# Airflow image with the hfc_tasks package installed (workers and the triggerer import it).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt constraints.txt pyproject.toml /opt/hfc/
COPY --chown=airflow:root hfc_tasks /opt/hfc/hfc_tasks
COPY --chown=airflow:root config /opt/hfc/config
RUN pip install --no-cache-dir -r /opt/hfc/requirements.txt -c /opt/hfc/constraints.txt \
 && pip install --no-cache-dir --no-deps /opt/hfc
ENV HFC_REGISTRY=/opt/hfc/config/registry.yaml
