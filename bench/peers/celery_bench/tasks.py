"""The Celery app of the peer benchmark: the same job as the orchestrator's
loadgen (fork/exec /bin/true), its outcome stored in Postgres, RabbitMQ as
the broker, and the message acknowledged only after the outcome is stored.

The worker (`celery -A celery_bench.tasks worker`) and the submitter
(bench.py) both import this module; they find the broker and the database
in the environment:

  PEERS_BROKER_URL        amqp://guest:guest@127.0.0.1:PORT//
  PEERS_RESULT_URL        db+postgresql+psycopg2://postgres:postgres@127.0.0.1:PORT/postgres
  PEERS_CONFIRM_PUBLISH   1: the submitter waits for the broker's publisher
                          confirm of each message (Celery's default: 0)
"""

import os
import subprocess

from celery import Celery


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set (bench/peers/run.sh sets it)")
    return value


app = Celery("peers", broker=_env("PEERS_BROKER_URL"), backend=_env("PEERS_RESULT_URL"))
app.conf.update(
    # The message is acknowledged after the task has run and its outcome is
    # stored (as the orchestrator's agents ack after reporting the result).
    task_acks_late=True,
    # A STARTED row before the SUCCESS row, as the orchestrator records a
    # job's start before its end.
    task_track_started=True,
    # Persistent messages on durable queues: Celery's defaults, stated.
    task_default_delivery_mode="persistent",
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Results stay in the table for the benchmark to count.
    result_expires=None,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "confirm_publish": os.environ.get("PEERS_CONFIRM_PUBLISH") == "1",
    },
    worker_hijack_root_logger=False,
)


@app.task(name="peers.true")
def run_true():
    """The benchmark's job: fork/exec /bin/true, failing if it fails."""
    subprocess.run(["/bin/true"], check=True)


@app.task(name="peers.noop")
def noop():
    """No process at all: what Celery itself costs per task."""
