"""Presentation helpers for the cockpit templates: the trend sparkline (a tiny inline SVG drawn
on the server: no script, no extra request) and the colours of figures and flags."""

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

register = template.Library()

_RISK_BADGES = {
    "over_seats": ("bg-red-lt", "bi-exclamation-octagon"),
    "under_used": ("bg-yellow-lt", "bi-arrow-down-circle"),
    "instance_dark": ("bg-dark-lt", "bi-moon-stars"),
    "renewal_low_use": ("bg-orange-lt", "bi-calendar-x"),
}


@register.simple_tag
def sparkline(values, width: int = 112, height: int = 28):
    """A polyline of ``values`` (None: a gap) scaled to its own min and max, with the last
    point marked. No points: "no data"."""
    points = [(i, v) for i, v in enumerate(values or []) if v is not None]
    if not points:
        return mark_safe('<span class="text-secondary small">no data</span>')  # noqa: S308
    pad = 3
    low = min(v for _, v in points)
    high = max(v for _, v in points)
    steps = max(len(values) - 1, 1)

    def xy(i, v):
        x = pad + i * (width - 2 * pad) / steps
        if high == low:
            return round(x, 1), height / 2
        y = height - pad - (v - low) * (height - 2 * pad) / (high - low)
        return round(x, 1), round(y, 1)

    runs, run = [], []
    for i, v in enumerate(values):
        if v is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(xy(i, v))
    if run:
        runs.append(run)
    lines = format_html_join(
        "",
        '<polyline points="{}" />',
        ((" ".join(f"{x},{y}" for x, y in r),) for r in runs if len(r) > 1),
    )
    dots = format_html_join(
        "", '<circle cx="{}" cy="{}" r="1.6" />', (r[0] for r in runs if len(r) == 1)
    )
    last_x, last_y = xy(*points[-1])
    label = f"Billable users, last {len(values)} days: from {points[0][1]} to {points[-1][1]}"
    return format_html(
        '<svg class="cockpit-sparkline" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="{}"><title>{}</title><g class="cockpit-sparkline-line">{}</g>'
        '<g class="cockpit-sparkline-dots">{}</g>'
        '<circle class="cockpit-sparkline-last" cx="{}" cy="{}" r="2.4" /></svg>',
        width, height, width, height, label, label, lines, dots, last_x, last_y,
    )  # fmt: skip


@register.filter
def utilization_colour(percent) -> str:
    """Over the seats: red; nearly full: orange; healthy: green; under-used: yellow."""
    if percent is None:
        return "bg-secondary"
    if percent > 100:
        return "bg-red"
    if percent >= 90:
        return "bg-orange"
    if percent >= 50:
        return "bg-green"
    return "bg-yellow"


@register.filter
def bar_width(percent) -> int:
    """A progress bar's width: the percentage, within 0–100."""
    if percent is None:
        return 0
    return max(0, min(100, round(percent)))


@register.filter
def risk_badge(code: str) -> str:
    return _RISK_BADGES.get(code, ("bg-secondary-lt", "bi-flag"))[0]


@register.filter
def risk_icon(code: str) -> str:
    return _RISK_BADGES.get(code, ("bg-secondary-lt", "bi-flag"))[1]


@register.filter
def days_until(day, today=None) -> int | None:
    """Whole days from today to ``day`` (negative: past)."""
    from django.utils import timezone

    if day is None:
        return None
    return (day - (today or timezone.localdate())).days


@register.filter
def ago(moment) -> str:
    """ "just now" under a minute, else Django's "3 hours ago"."""
    from django.utils import timezone
    from django.utils.timesince import timesince

    if moment is None:
        return ""
    if (timezone.now() - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment)} ago"


@register.simple_tag
def choice_options(bound_field, empty_label: str = ""):
    """A select's ``<option>`` list in one Python pass (an owner list is ~200 people: a
    template loop over them costs more than the rest of the filter form)."""
    selected = "" if bound_field.value() is None else str(bound_field.value())
    return format_html_join(
        "",
        '<option value="{}"{}>{}</option>',
        (
            (
                str(value),
                mark_safe(" selected") if str(value) == selected else "",  # noqa: S308
                empty_label if str(value) == "" and empty_label else label,
            )
            for value, label in bound_field.field.choices
        ),
    )
