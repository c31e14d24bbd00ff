"""Presentation helpers for the staff console templates: no queries, no business rules."""

import copy

from django import forms, template
from django.urls import NoReverseMatch, reverse

from provision.choices import Role

register = template.Library()

# Which top-navigation entry a page belongs to, by URL name in the "provision" namespace.
NAV_SECTIONS = {
    "home": {"home"},
    "customers": {
        "search",
        "customer_list",
        "customer_detail",
        "customer_edit",
        "subscription_detail",
        "fix",
    },
    "provisioning": {"provisioningrecord_list"},
    "audit": {"auditevent_list"},
}


@register.simple_tag(takes_context=True)
def nav_active(context, section: str) -> str:
    request = context.get("request")
    match = getattr(request, "resolver_match", None)
    if match is None or match.namespace != "provision":
        return ""
    return "active" if match.url_name in NAV_SECTIONS.get(section, ()) else ""


@register.filter
def role_label(value) -> str:
    try:
        return Role(value).label
    except ValueError:
        return ""


def _css_class_for(widget) -> str:
    if isinstance(widget, forms.CheckboxInput):
        return "form-check-input"
    if isinstance(widget, forms.Select | forms.SelectMultiple):
        return "form-select"
    return "form-control"


@register.filter
def bs_widget(bound_field, extra: str = ""):
    """Render a form field's widget with Bootstrap's classes (and ``is-invalid`` on errors)."""
    widget = bound_field.field.widget
    classes = [widget.attrs.get("class", ""), _css_class_for(widget), extra]
    if bound_field.errors:
        classes.append("is-invalid")
    attrs = {"class": " ".join(c for c in classes if c)}
    if bound_field.errors:
        attrs["aria-describedby"] = f"{bound_field.auto_id}_errors"
    field = bound_field.field
    is_optional_choice = isinstance(field, forms.ModelChoiceField) and not field.required
    if is_optional_choice and field.empty_label == "---------":
        # The form's own copy of the field (forms deep-copy their fields), so this is per form.
        field.empty_label = "— none —"
    if isinstance(widget, forms.NullBooleanSelect):
        # Django labels the unset choice "Unknown"; in a filter it means "any".
        widget = copy.copy(widget)
        widget.choices = [("unknown", "Any"), ("true", "Yes"), ("false", "No")]
        return bound_field.as_widget(widget=widget, attrs=attrs)
    return bound_field.as_widget(attrs=attrs)


@register.filter
def is_checkbox(bound_field) -> bool:
    return isinstance(bound_field.field.widget, forms.CheckboxInput)


@register.filter
def action_label(action: str) -> str:
    """``provision.subscription_seats_changed`` → ``Subscription seats changed``."""
    verb = (action or "").rsplit(".", 1)[-1].replace("_", " ").strip()
    return verb[:1].upper() + verb[1:]


@register.filter
def action_app(action: str) -> str:
    return (action or "").split(".", 1)[0] if "." in (action or "") else ""


# Audit targets that have a console page, by ``app_label.model``.
_TARGET_URLS = {
    "provision.customer": "provision:customer_detail",
    "provision.subscription": "provision:subscription_detail",
    "licenses.license": "licenses:license_detail",
}


@register.simple_tag
def audit_target_url(event) -> str:
    name = _TARGET_URLS.get(event.target_type)
    if not name or not str(event.target_id).isdigit():
        return ""
    try:
        return reverse(name, args=[int(event.target_id)])
    except NoReverseMatch:
        return ""


@register.filter
def change_value(value) -> str:
    """How one side of an old→new pair reads in the timeline."""
    if value is None or value == "":
        return "—"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


@register.filter
def seat_delta(seats, previous) -> str:
    """``75|seat_delta:50`` → ``+25``; ``40|seat_delta:50`` → ``−10``."""
    try:
        delta = int(seats) - int(previous)
    except (TypeError, ValueError):
        return ""
    return f"+{delta}" if delta > 0 else f"−{abs(delta)}" if delta < 0 else "±0"
