"""The Celery application. Tasks live in each app's ``tasks.py``; schedules in settings."""

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "provision.settings")

app = Celery("provision")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _bind_request_context(task=None, kwargs=None, **_):
    """Tasks receive ``request_id`` so their audit events link back to what caused them."""
    from provision.context import set_context

    request_id = (kwargs or {}).get("request_id") or f"task-{task.request.id}"
    set_context(request_id=request_id, source="task")
