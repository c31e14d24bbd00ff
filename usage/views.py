"""Staff console pages of the usage app, namespace "usage" (included under /usage/).

Thin: selectors read, services write, one service call per POST.
"""

import csv
import itertools
from types import SimpleNamespace
from urllib.parse import quote

from django.contrib import messages
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from licenses import selectors as license_selectors
from licenses.choices import LicenseKind
from provision import permissions
from provision import selectors as provision_selectors
from provision.decorators import role_required
from provision.exceptions import ApplicationError
from provision.view_helpers import LIST_PAGE_SIZE, page_of, querystring_without_page
from usage import cockpit, selectors, services
from usage.choices import UsageFileImportStatus
from usage.forms import UsageFileUploadForm

# How many imports the license and customer pages list; the rest are one click away.
USAGE_FILES_SHOWN = 10
# Usage files come from air-gapped instances: offline cloud and legacy licenses (§3.1).
USAGE_FILE_LICENSE_KINDS = (LicenseKind.OFFLINE_CLOUD, LicenseKind.LEGACY)


# --- Usage files --------------------------------------------------------------------------------


@role_required(permissions.is_staff_member)
def usage_file_import_list(request):
    imports, filterset = selectors.usage_file_import_list(actor=request.user, filters=request.GET)
    page = page_of(request, imports)
    return render(
        request,
        "usage/usagefileimport_list.html",
        {
            "filter": filterset,
            "page_obj": page,
            "querystring": querystring_without_page(request),
        },
    )


@role_required(permissions.is_staff_member)
def license_usage_files(request, pk: int):
    """The license page's "Usage files" card (loaded into the page by htmx): the imports of
    the license's subscription, and the upload form for support roles."""
    license = license_selectors.license_get(actor=request.user, pk=pk)
    imports, _ = selectors.usage_file_import_list(
        actor=request.user, filters={"subscription_id": license.subscription_id}
    )
    latest = list(imports[: USAGE_FILES_SHOWN + 1])
    return render(
        request,
        "usage/_usage_files_card.html",
        {
            "usage_files": latest[:USAGE_FILES_SHOWN],
            "more_usage_files": len(latest) > USAGE_FILES_SHOWN,
            "usage_files_url": f"?subscription_id={license.subscription_id}",
            "upload_url": reverse("usage:license_usage_file_upload", args=[license.pk]),
            "can_upload": permissions.can_fix(request.user)
            and license.kind in USAGE_FILE_LICENSE_KINDS,
            "usage_file_form": UsageFileUploadForm(),
            "scope": "license",
        },
    )


def _upload(request, *, template_context: dict, back_url: str, **where):
    """One upload: the form, one service call, then the page or the form with the reason."""
    posted = request.method == "POST"
    form = UsageFileUploadForm(request.POST if posted else None, request.FILES if posted else None)
    if posted and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            file_import = services.usage_file_import(
                actor=request.user, file_name=upload.name, content=form.content(), **where
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            message = selectors.usage_file_import_message(file_import=file_import)
            if file_import.status == UsageFileImportStatus.IMPORTED:
                messages.success(request, message)
                return redirect(f"{back_url}#usage-files")
            # Recorded as rejected; the form says why, so the next file can be chosen at once.
            form.add_error("file", message)
    return render(
        request,
        "usage/usage_file_upload.html",
        {"form": form, "back_url": back_url} | template_context,
    )


@role_required(permissions.can_fix)
def license_usage_file_upload(request, pk: int):
    license = license_selectors.license_get(actor=request.user, pk=pk)
    if license.kind not in USAGE_FILE_LICENSE_KINDS:
        messages.error(
            request,
            "Usage files are for offline cloud and legacy licenses: an online cloud license "
            "reports its usage every day by itself.",
        )
        return redirect(license)
    return _upload(
        request,
        license=license,
        back_url=license.get_absolute_url(),
        template_context={
            "license": license,
            "subscription": license.subscription,
            "customer": license.subscription.customer,
        },
    )


@role_required(permissions.can_fix)
def customer_usage_file_upload(request, pk: int):
    customer = provision_selectors.customer_get(actor=request.user, pk=pk)
    return _upload(
        request,
        customer=customer,
        back_url=customer.get_absolute_url(),
        template_context={"customer": customer},
    )


# --- Seat utilization cockpit (/cockpit/, namespace "cockpit") ------------------------------------

# The cockpit table's columns, in order: (sort parameter or None, heading, right-aligned).
COCKPIT_COLUMNS = [
    ("name", "Customer", False),
    (None, "Plans", False),
    ("seats", "Seats", True),
    ("billable", "Billable", True),
    ("max_used", "Max used", True),
    ("utilization", "Utilization", False),
    ("owed", "Owed", True),
    (None, "30-day trend", False),
    ("last_sync", "Last sync", False),
    ("renewal", "Renewal", False),
    ("risk", "Risk", False),
]


def _cockpit_headers(request) -> list[dict]:
    """Each column's heading with the link that sorts by it (again: the other way round)."""
    current = request.GET.get("sort", "")
    headers = []
    for key, label, numeric in COCKPIT_COLUMNS:
        header = {"label": label, "numeric": numeric, "url": None, "direction": None}
        if key is not None:
            params = request.GET.copy()
            params.pop("page", None)
            # Figures read best largest first; names and dates A→Z / soonest first.
            first = key if key in ("name", "renewal", "last_sync") else f"-{key}"
            if current in (key, f"-{key}"):
                header["direction"] = "desc" if current.startswith("-") else "asc"
                params["sort"] = f"-{key}" if current == key else key
            else:
                params["sort"] = first
            header["url"] = f"?{params.urlencode()}"
        headers.append(header)
    return headers


def _cockpit_risk_links(request) -> list[dict]:
    """The quick risk filters: the current query with ``risk`` set (or cleared, when on)."""
    current = request.GET.get("risk", "")
    links = []
    for code, label in cockpit.CockpitRisk.LABELS.items():
        params = request.GET.copy()
        params.pop("page", None)
        if current == code:
            params.pop("risk", None)
        else:
            params["risk"] = code
        url = reverse("cockpit:cockpit") + (f"?{params.urlencode()}" if params else "")
        links.append({"code": code, "label": label, "url": url, "active": current == code})
    return links


def _present(rows, *, back: str) -> None:
    """What each row shows, formatted once in Python: the table has ~50 rows of 11 cells, and
    the same formatting through template filters costs several times as much."""
    from usage.templatetags import cockpit as tags

    today = timezone.localdate()
    back_query = f"?back={quote(back)}" if back else ""
    for row in rows:
        owner = row.account_owner
        utilization = row.utilization_pct
        renewal_days = (row.renewal_date - today).days if row.renewal_date else None
        change = row.trend_change
        row.show = SimpleNamespace(
            url=reverse("cockpit:customer", args=[row.pk]) + back_query,
            owner=(owner.get_full_name() or owner.username) if owner else "no owner",
            plans=", ".join(row.plans),
            deployments=", ".join(row.deployments),
            utilization=None if utilization is None else f"{utilization:.1f}%",
            utilization_now=None if utilization is None else round(utilization),
            utilization_colour=tags.utilization_colour(utilization),
            utilization_width=tags.bar_width(utilization),
            trend=tags.sparkline(row.trend, 96, 26),
            change=None if change is None else f"{change:+d}" if change else "0",
            change_colour={1: "text-green", -1: "text-red"}.get(
                ((change or 0) > 0) - ((change or 0) < 0), "text-secondary"
            ),
            last_sync=tags.ago(row.last_sync_at) if row.last_sync_at else None,
            last_sync_title=f"{row.last_sync_at:%Y-%m-%d %H:%M} UTC" if row.last_sync_at else "",
            renewal=f"{row.renewal_date:%Y-%m-%d}" if row.renewal_date else None,
            renewal_in=(
                f"in {renewal_days} day{'s' if renewal_days != 1 else ''}"
                if renewal_days is not None
                else None
            ),
            renewal_soon=renewal_days is not None and renewal_days <= cockpit.RENEWAL_RISK_DAYS,
            flags=[
                (code, label, short, tags.risk_badge(code), tags.risk_icon(code))
                for code, label, short in row.flag_items
            ],
        )


def _filter_errors(filterset) -> list[tuple[str, str]]:
    """``(field label, message)`` for each error of an invalid filter form."""
    form = filterset.form
    return [
        (form.fields[name].label if name in form.fields else "Filters", message)
        for name, messages_ in form.errors.items()
        for message in messages_
    ]


@role_required(permissions.is_staff_member)
@require_GET
def cockpit_list(request):
    """The seat utilization cockpit: one row per customer with an active subscription. Account
    managers start on their book; the filters, the sort and the page are in the query string,
    which the Export button and ``/api/cockpit/`` take as they are."""
    listing = cockpit.cockpit_list(actor=request.user, filters=request.GET)
    page = cockpit.CockpitPaginator(listing.rows, LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = cockpit.cockpit_rows_complete(page.object_list)
    querystring = querystring_without_page(request)
    _present(page.object_list, back=querystring)
    context = {
        "filter": listing.filterset,
        "filter_valid": listing.valid,
        "filter_errors": [] if listing.valid else _filter_errors(listing.filterset),
        "risk_links": _cockpit_risk_links(request),
        "book_default": listing.book_default,
        "own_book": listing.own_book,
        "page_obj": page,
        "rows": page.object_list,
        "headers": _cockpit_headers(request),
        "querystring": querystring,
        "export_url": f"{reverse('cockpit:export')}?{querystring}",
        "definitions": cockpit.DEFINITIONS,
    }
    return render(request, "usage/cockpit/cockpit_list.html", context)


class _Echo:
    """A file-like object whose ``write`` hands the line back, for csv.writer in a stream."""

    def write(self, value):
        return value


@role_required(permissions.is_staff_member)
@require_GET
def cockpit_export(request):
    """``/cockpit/export.csv?<the page's query string>``: every row the page would list, in its
    order, streamed (10,000 rows are fine). Invalid filters: 400 with the reasons."""
    listing = cockpit.cockpit_list(actor=request.user, filters=request.GET)
    if not listing.valid:
        reasons = "; ".join(
            f"{name}: {' '.join(errors)}" for name, errors in listing.filterset.errors.items()
        )
        return HttpResponseBadRequest(
            f"The filters are not valid: {reasons}", content_type="text/plain; charset=utf-8"
        )
    writer = csv.writer(_Echo())
    # The byte-order mark tells spreadsheet programs the file is UTF-8 (customer names).
    lines = itertools.chain(
        ["\ufeff"], (writer.writerow(row) for row in cockpit.cockpit_csv_rows(listing.rows))
    )
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    stamp = timezone.localdate().isoformat()
    response["Content-Disposition"] = f'attachment; filename="seat-cockpit-{stamp}.csv"'
    return response


@role_required(permissions.is_staff_member)
@require_GET
def cockpit_customer(request, pk: int):
    """One customer's cockpit: its figures, and per active subscription the daily billable users
    against the seats purchased over the term, the run-out forecast and the quarterly
    reconciliation preview."""
    page = cockpit.cockpit_customer(actor=request.user, pk=pk)
    back = request.GET.get("back", "")
    return render(
        request,
        "usage/cockpit/customer_cockpit.html",
        {
            "page": page,
            "customer": page.customer,
            "sections": page.subscriptions,
            "definitions": cockpit.DEFINITIONS,
            "risk_choices": cockpit.CockpitRisk.LABELS,
            # Back to the list as it was filtered (only a query string, never another site).
            "back_url": reverse("cockpit:cockpit") + (f"?{back}" if back else ""),
        },
    )
