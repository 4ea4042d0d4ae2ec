"""Airflow 3 DAG: the dupflow hygiene job every night at 02:00 (cron), one task, the summary as its XCom.

Put this file in the DAGs folder of an Airflow whose workers have dupflow installed, and name the job's
config in the environment (`DUPFLOW_HYGIENE_CONFIG=/etc/dupflow/hygiene.toml`) or per run
(`airflow dags trigger dupflow_hygiene -c '{"config": "..."}'`). A run that finds the job claimed by
another run is skipped; a failed or incomplete run fails the task (Airflow's retries then apply).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

SCHEDULE = os.environ.get("DUPFLOW_HYGIENE_SCHEDULE", "0 2 * * *")  # every night at 02:00


@dag(
    dag_id="dupflow_hygiene",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["dupflow", "hygiene"],
    params={"config": Param(os.environ.get("DUPFLOW_HYGIENE_CONFIG", ""), type="string")},
)
def dupflow_hygiene():
    @task(retries=2, retry_delay=pendulum.duration(minutes=10))
    def hygiene(params: dict | None = None) -> dict:
        """One run of the job; its summary (status, report folder, counts, journal) becomes the XCom."""
        import json

        from dupflow.hygiene import ConfigError, run

        config = (params or {}).get("config") or os.environ.get("DUPFLOW_HYGIENE_CONFIG", "")
        try:
            summary = run(config)
        except ConfigError as exc:  # retrying cannot fix a config file
            raise AirflowFailException(str(exc)) from None
        print(summary.to_json())
        if summary.status == "busy":
            raise AirflowSkipException(summary.message)
        if summary.status in ("failed", "incomplete"):
            raise RuntimeError(f"dupflow hygiene {summary.status}: {summary.message or summary.to_json()}")
        return json.loads(summary.to_json())

    hygiene()


dupflow_hygiene()
