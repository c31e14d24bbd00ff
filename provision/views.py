"""Staff console pages for customers and subscriptions. Thin: selectors read, services write."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from provision import permissions, selectors, services
from provision import search as search_module
from provision.decorators import role_required
from provision.exceptions import ApplicationError
from provision.forms import CustomerEditForm, NoteForm
from provision.view_helpers import apply_service_errors, page_of, querystring_without_page


@role_required(permissions.is_staff_member)
def home(request):
    context = {
        "counts": selectors.home_counts(actor=request.user),
        "stuck_steps": selectors.stuck_steps(actor=request.user, limit=8),
    }
    return render(request, "provision/home.html", context)


@role_required(permissions.is_staff_member)
@require_GET
def search(request):
    """The one search box: open the customer when the input names exactly one, else list hits.

    Every staff role may search (account managers read). Input it will not search (too long,
    control characters) gets the results page with the reason, never an error page.
    """
    raw = request.GET.get("q", "")
    if not raw.strip():
        return redirect("provision:customer_list")
    try:
        results = search_module.universal_search(actor=request.user, query=raw)
    except search_module.SearchInputError as error:
        return render(
            request, "provision/search_results.html", {"results": None, "input_error": str(error)}
        )
    hit = results.resolved
    if hit is not None:
        messages.info(request, f"Opened {hit.customer_name}: found by {', '.join(hit.reasons)}.")
        return redirect(hit.customer_url)
    return render(request, "provision/search_results.html", {"results": results})


@role_required(permissions.CustomerPolicy.can_view)
def customer_list(request):
    filters = request.GET.copy()
    # Account managers start on their own book; "all=1" (or any filter) widens it.
    book_default = permissions.is_account_manager_only(request.user) and not {
        k for k in filters if k != "page"
    }
    if book_default:
        filters["account_owner_id"] = str(request.user.pk)
    customers, filterset = selectors.customer_list(actor=request.user, filters=filters)
    page = page_of(request, customers)
    template = "provision/customer_list.html"
    if request.htmx and request.htmx.target == "customer-results":
        template = "provision/_customer_rows.html"
    response = render(
        request,
        template,
        {
            "filter": filterset,
            "page_obj": page,
            "book_default": book_default,
            "querystring": querystring_without_page(request),
        },
    )
    # The same URL serves the whole page and the htmx fragment; caches must keep them apart.
    patch_vary_headers(response, ["HX-Request"])
    return response


# The customer page's timeline card: the htmx target of its kind filter.
CUSTOMER_TIMELINE_ID = "timeline"
# The newest notes repeated beside the note form (all of them are in the timeline).
CUSTOMER_NOTES_SHOWN = 3


@role_required(permissions.CustomerPolicy.can_view)
def customer_detail(request, pk: int):
    """The customer's 360° view: subscriptions, licenses, activation codes, instances,
    namespaces, provisioning, usage, CRM sync and one timeline of audit events and notes.

    ``?kind=`` filters the timeline; an htmx request aimed at the timeline card gets that card
    alone. Support roles see the fix menus (``can_fix``); account managers read and add notes.
    """
    from crm_sync.views import customer_crm_context
    from usage.forms import UsageFileUploadForm
    from usage.selectors import customer_usage_series, usage_file_import_list
    from usage.views import USAGE_FILE_LICENSE_KINDS, USAGE_FILES_SHOWN

    kind = request.GET.get("kind", "all")
    if kind not in selectors.TIMELINE_KINDS_BY_KEY:
        kind = "all"
    can_fix = permissions.can_fix(request.user)
    if request.htmx and request.htmx.target == CUSTOMER_TIMELINE_ID:
        customer = selectors.customer_get(actor=request.user, pk=pk, related=False)
        response = render(
            request,
            "provision/customer/_timeline.html",
            {
                "customer": customer,
                "timeline": selectors.customer_timeline(
                    actor=request.user, customer=customer, kind=kind
                ).entries,
                "timeline_kind": kind,
                "timeline_kinds": selectors.TIMELINE_KINDS,
                "timeline_limit": selectors.TIMELINE_LIMIT,
            },
        )
        patch_vary_headers(response, ["HX-Request"])
        return response

    page = selectors.customer_page(actor=request.user, pk=pk, with_fixes=can_fix)
    customer = page.customer
    timeline = selectors.customer_timeline(
        actor=request.user, customer=customer, kind=kind, recent_notes=CUSTOMER_NOTES_SHOWN
    )
    # Only offline and legacy customers e-mail license_usage.csv (the card's upload form shows
    # only for them, so their pages are the only place a file was uploaded).
    offline = any(s.licensing_method in USAGE_FILE_LICENSE_KINDS for s in page.subscriptions)
    usage_files = []
    if offline:
        imports, _ = usage_file_import_list(
            actor=request.user, filters={"customer_id": customer.pk}
        )
        usage_files = list(imports[: USAGE_FILES_SHOWN + 1])
    context = {
        "customer": customer,
        "page": page,
        "subscriptions": page.subscriptions,
        "contacts": page.contacts,
        "instances": page.instances,
        "namespaces": page.namespaces,
        "stale_before": page.stale_before,
        "timeline": timeline.entries,
        "recent_notes": timeline.recent_notes,
        "timeline_kind": kind,
        "timeline_kinds": selectors.TIMELINE_KINDS,
        "timeline_limit": selectors.TIMELINE_LIMIT,
        "note_form": NoteForm(),
        "can_edit": permissions.CustomerPolicy.can_edit(request.user, customer),
        "can_fix": can_fix,
        "show_usage_files": offline,
        "usage_files": usage_files[:USAGE_FILES_SHOWN],
        "more_usage_files": len(usage_files) > USAGE_FILES_SHOWN,
        "usage_files_url": f"?customer_id={customer.pk}",
        "can_upload_usage_file": can_fix,
        "usage_file_form": UsageFileUploadForm(),
        "usage_series": customer_usage_series(customer=customer),
        **customer_crm_context(user=request.user, customer=customer),
    }
    response = render(request, "provision/customer_detail.html", context)
    # The same URL serves the whole page and the timeline fragment; caches must keep them apart.
    patch_vary_headers(response, ["HX-Request"])
    return response


@role_required(permissions.CustomerPolicy.can_edit)
def customer_edit(request, pk: int):
    customer = selectors.customer_get(actor=request.user, pk=pk)
    form = CustomerEditForm(request.POST or None, customer=customer)
    if request.method == "POST" and form.is_valid():
        try:
            customer = services.customer_update(
                actor=request.user,
                customer=customer,
                data=form.changes(),
                reason=form.cleaned_data["reason"],
                ticket_url=form.cleaned_data["ticket_url"],
            )
        except (ApplicationError, ValidationError) as error:
            apply_service_errors(form, error)
        else:
            messages.success(request, f"Customer {customer.name} saved.")
            return redirect(customer)
    return render(request, "provision/customer_edit.html", {"customer": customer, "form": form})


@role_required(permissions.CustomerPolicy.can_add_note)
@require_POST
def note_add(request, pk: int):
    customer = selectors.customer_get(actor=request.user, pk=pk)
    form = NoteForm(request.POST)
    if form.is_valid():
        try:
            services.note_add(actor=request.user, customer=customer, body=form.cleaned_data["body"])
        except (ApplicationError, ValidationError) as error:
            messages.error(request, getattr(error, "message", None) or "; ".join(error.messages))
        else:
            messages.success(request, "Note added.")
    else:
        messages.error(request, "A note cannot be empty.")
    return redirect(f"{customer.get_absolute_url()}#notes")


@role_required(permissions.SubscriptionPolicy.can_view)
def subscription_detail(request, pk: int):
    subscription = selectors.subscription_get(actor=request.user, pk=pk)
    from licenses.selectors import subscription_licensing
    from usage.selectors import subscription_usage_series

    context = {
        "subscription": subscription,
        "customer": subscription.customer,
        "records": list(subscription.provisioning_records.all()),
        "ledger": list(subscription.seat_ledger.all()[:20]),
        "can_change_seats": permissions.SubscriptionPolicy.can_change_seats(request.user),
        "usage": subscription_usage_series(subscription=subscription),
        # Self-managed only: licenses and activation codes (GitLab.com has neither).
        "licensing": (
            subscription_licensing(actor=request.user, subscription=subscription)
            if subscription.is_self_managed
            else None
        ),
        "can_issue_license": permissions.LicensePolicy.can_issue(request.user, subscription),
        "can_send_code": permissions.LicensePolicy.can_resend(request.user),
        "can_release_code": permissions.LicensePolicy.can_release(request.user),
    }
    return render(request, "provision/subscription_detail.html", context)


@role_required(permissions.is_staff_member)
def subscription_seats_change(request, pk: int):
    """Moved: the ``seats_change`` support fix page (preview, reason code, four-eyes above +20%).
    The old address stays for bookmarks; GET and POST redirect there, and a POST is never acted
    on here."""
    return redirect(reverse("provision:fix", kwargs={"action": "seats_change", "pk": pk}))


@role_required(permissions.SubscriptionPolicy.can_view)
def provisioning_record_list(request):
    records, filterset = selectors.provisioning_record_list(actor=request.user, filters=request.GET)
    return render(
        request,
        "provision/provisioningrecord_list.html",
        {
            "filter": filterset,
            "page_obj": page_of(request, records),
            "querystring": querystring_without_page(request),
        },
    )


@role_required(permissions.AuditPolicy.can_view)
def audit_event_list(request):
    events, filterset = selectors.audit_event_list(actor=request.user, filters=request.GET)
    return render(
        request,
        "provision/auditevent_list.html",
        {
            "filter": filterset,
            "page_obj": page_of(request, events),
            "querystring": querystring_without_page(request),
        },
    )


@never_cache
@require_GET
def ping(request):
    """``GET /-/ping``: ``{"status": "ok"}`` with no database or cache access. Public on
    purpose (a load balancer's liveness probe; the baseline of the Seat Link benchmark); the
    full readiness check, which needs the database, is ``/health/``."""
    return JsonResponse({"status": "ok"})


@role_required(permissions.SubscriptionPolicy.can_view)
@require_GET
def stuck_queue(request):
    """The stuck provisioning queue: one row per order held up past its step's SLA, oldest
    first, with the likely cause; support roles get Retry and Mark done on each row."""
    from provision import stuck

    # Each row is a small case file (age, cause, error, actions): 25 make a long enough page.
    queue = stuck.stuck_queue_page(
        actor=request.user, filters=request.GET, page=request.GET.get("page"), size=25
    )
    return render(
        request,
        "provision/stuck_queue.html",
        {
            "filter": queue.filterset,
            "page_obj": queue.page,
            "rows": queue.rows,
            "can_fix": permissions.can_fix(request.user),
            "slas": stuck.step_slas(),
            "querystring": querystring_without_page(request),
        },
    )


@role_required(permissions.is_staff_member)
@require_GET
def indicators(request):
    """The performance indicators: Cloud Licensing adoption, seat-sync rate and the share of
    provisioning tickets, weekly over the last 26 weeks, each with its definition, chart and
    numbers; ``?format=csv`` downloads the numbers. Every staff role reads it."""
    import csv

    from django.conf import settings
    from django.http import HttpResponse
    from django.utils import timezone

    from provision import indicators as indicator_module

    dashboard = indicator_module.indicator_dashboard()
    if request.GET.get("format") == "csv":
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        stamp = timezone.localdate().isoformat()
        response["Content-Disposition"] = f'attachment; filename="provision-indicators-{stamp}.csv"'
        writer = csv.writer(response)
        writer.writerows(indicator_module.dashboard_csv_rows(dashboard))
        return response
    return render(
        request,
        "provision/indicators.html",
        {
            "dashboard": dashboard,
            "indicators": [
                {
                    "series": series,
                    "chart": series.chart_data(),
                    "chart_id": f"indicator-data-{series.definition.key}",
                }
                for series in dashboard.series
            ],
            "rule": dashboard.ticket_rule,
            "time_zone": settings.TIME_ZONE,
        },
    )
