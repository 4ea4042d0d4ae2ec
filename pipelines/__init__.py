"""Ready-made jobs around dupflow: `python -m pipelines.hygiene CONFIG` and the scheduler examples.

The logic lives in `dupflow.hygiene` (installed with dupflow, so a container or an Airflow worker that
has dupflow has the job too); this folder holds the thin entry points, the example config and the
scheduler files (Airflow DAG, cron line, systemd units).
"""
