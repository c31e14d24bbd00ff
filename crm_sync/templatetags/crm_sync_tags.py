"""Presentation helpers for the CRM sync templates: no queries, no business rules."""

from django import template
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

register = template.Library()


def _duration_text(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def run_duration(run) -> str:
    """How long a run took (or, while it runs, has taken so far): ``0.4 s``, ``3 min 05 s``."""
    if run.started_at is None:
        return "—"
    end = run.finished_at or timezone.now()
    return _duration_text(max((end - run.started_at).total_seconds(), 0.0))


@register.filter
def iso_moment(value):
    """A payload's ISO 8601 date or moment (``2025-03-01T12:00:00Z``) as a date or datetime,
    for the ``date`` filter; anything else comes back unchanged."""
    if not isinstance(value, str):
        return value
    return parse_datetime(value) or parse_date(value) or value
