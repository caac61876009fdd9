"""A Celery application whose task answers :func:`probe.report` from a prefork pool process.

The main worker process imports this module (and so builds the probe's state)
before it forks the pool.
"""

from __future__ import annotations

import os
from typing import Any

import probe
from celery import Celery

app = Celery("integ", broker=os.environ["INTEG_BROKER_URL"], backend=os.environ["INTEG_RESULT_URL"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,  # a task waiting at the barrier must not hold others back
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="integ.report")
def report(round_name: str) -> dict[str, Any]:
    return probe.report(round_name)
