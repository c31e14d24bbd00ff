"""Staff console pages for licenses, activation codes, the signing key and troubleshooting.

Thin: selectors read, services write, one service call per POST. (The instance-facing /graphql
endpoint lives in licenses/graphql.py.) Revoke, re-issue, resend and the activation code are
support fixes (``provision.fixes``, one page each under /fixes/; the page that shows a new
activation code once is rendered there); their old addresses here only redirect. The
troubleshooting page handles secrets: it is never cached and never echoes what was pasted.
"""

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.http import content_disposition_header
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from licenses import selectors, services
from licenses.choices import CURRENT_LICENSE_STATUSES, LicenseKind, LicenseStatus
from licenses.forms import DownloadForm, LicenseIssueForm, TroubleshootForm
from licenses.mail import license_filename
from provision import permissions
from provision import selectors as provision_selectors
from provision.decorators import role_required
from provision.exceptions import ApplicationError
from provision.view_helpers import apply_service_errors, page_of, querystring_without_page

PUBLIC_KEY_FILENAME = "provision-license.pub"
Policy = permissions.LicensePolicy


def _issue_preview(subscription, kind: str) -> dict:
    """What issuing now would produce and which current license it would replace."""
    terms = services.license_terms(subscription=subscription, kind=kind, today=timezone.localdate())
    replaces = (
        selectors.license_current(subscription, starts_on=terms.starts_on)
        .defer("key", "attributes")
        .first()
    )
    return {
        "terms": terms,
        "replaces": replaces,
        "seats": subscription.seats,
        "kind_label": LicenseKind(kind).label,
    }


# --- Licenses -----------------------------------------------------------------------------------


@role_required(Policy.can_view)
def license_list(request):
    licenses, filterset = selectors.license_list(actor=request.user, filters=request.GET)
    page = page_of(request, licenses)
    return render(
        request,
        "licenses/license_list.html",
        {
            "filter": filterset,
            "page_obj": page,
            "querystring": querystring_without_page(request),
        },
    )


@role_required(Policy.can_view)
def license_detail(request, pk: int):
    license = selectors.license_get(actor=request.user, pk=pk)
    subscription = license.subscription
    user = request.user
    is_file = license.kind in services.FILE_KINDS
    is_current = license.status in CURRENT_LICENSE_STATUSES
    key_check = selectors.license_key_check(license=license)
    context = {
        "license": license,
        "subscription": subscription,
        "customer": subscription.customer,
        "chain": selectors.license_supersede_chain(license=license),
        "key_check": key_check,
        "attributes_json": json.dumps(
            key_check.decoded.attributes if key_check.decoded else license.attributes,
            indent=2,
            ensure_ascii=False,
        ),
        "activations": list(license.activations.all()),
        "deliveries": list(license.deliveries.all()),
        "events": selectors.license_audit_events(actor=user, license=license),
        "filename": license_filename(license),
        "is_file": is_file,
        "is_current": is_current,
        "can_download": Policy.can_download(user, license) and is_file and is_current,
        "can_send": Policy.can_resend(user, license) and is_file and is_current,
        "can_reissue": Policy.can_issue(user, subscription) and subscription.is_self_managed,
        # Support may *request* a revoke: the fix files it for a lead's approval (four-eyes).
        "can_revoke": permissions.can_fix(user)
        and license.status not in (LicenseStatus.REVOKED, LicenseStatus.EXPIRED),
        "download_form": DownloadForm(),
    }
    return render(request, "licenses/license_detail.html", context)


@role_required(Policy.can_download)
@require_POST
def license_download(request, pk: int):
    """The exact stored key, byte for byte, as ``<subscription>_<id>.gitlab-license``."""
    license = selectors.license_get(actor=request.user, pk=pk)
    form = DownloadForm(request.POST)
    form.is_valid()  # both fields are optional; invalid values are simply dropped
    try:
        services.license_download_record(
            actor=request.user,
            license=license,
            reason=form.cleaned_data.get("reason", ""),
            ticket_url=form.cleaned_data.get("ticket_url", ""),
        )
    except (ApplicationError, ValidationError) as error:
        messages.error(request, getattr(error, "message", None) or "; ".join(error.messages))
        return redirect(license)
    filename = license_filename(license)
    messages.success(request, f"Downloaded {filename}; the download is recorded as a delivery.")
    response = HttpResponse(license.key.encode("utf-8"), content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    add_never_cache_headers(response)
    return response


# --- Moved to the support-fix pages --------------------------------------------------------------
#
# Revoke, re-issue, resend, the activation code and its release are support fixes now (issue 6):
# one page each under /fixes/, with a preview, a reason code and, for a revoke, a second person.
# The old addresses stay for bookmarks and links in e-mails. They only redirect: a POST is never
# acted on here (the 302 turns it into a GET of the fix page, which previews first).


def _moved_to_fix(action: str, pk: int):
    return redirect(reverse("provision:fix", kwargs={"action": action, "pk": pk}))


@role_required(permissions.is_staff_member)
def license_revoke(request, pk: int):
    """Moved: the ``license_revoke`` fix page (four-eyes). GET and POST redirect there."""
    return _moved_to_fix("license_revoke", pk)


@role_required(permissions.is_staff_member)
def license_reissue(request, pk: int):
    """Moved: the ``license_reissue`` fix page. GET and POST redirect there."""
    return _moved_to_fix("license_reissue", pk)


@role_required(permissions.is_staff_member)
def license_send(request, pk: int):
    """Moved: the ``license_resend`` fix page. GET and POST redirect there."""
    return _moved_to_fix("license_resend", pk)


@role_required(permissions.is_staff_member)
def activation_code_send(request, pk: int):
    """Moved: the ``activation_code_resend`` fix page of the subscription ``pk``. GET and POST
    redirect there."""
    return _moved_to_fix("activation_code_resend", pk)


@role_required(permissions.is_staff_member)
def activation_code_release(request, pk: int):
    """Moved: the ``activation_code_release`` fix page of the activation code ``pk``. GET and
    POST redirect there."""
    return _moved_to_fix("activation_code_release", pk)


# --- Subscription actions -----------------------------------------------------------------------


@role_required(Policy.can_issue)
def license_issue(request, pk: int):
    subscription = provision_selectors.subscription_get(actor=request.user, pk=pk)
    form = LicenseIssueForm(
        request.POST or None, initial={"kind": subscription.licensing_method or None}
    )
    if request.method == "POST" and form.is_valid():
        try:
            license = services.license_issue(
                actor=request.user,
                subscription=subscription,
                kind=form.cleaned_data["kind"],
                reason=form.cleaned_data["reason"],
                ticket_url=form.cleaned_data["ticket_url"],
            )
        except (ApplicationError, ValidationError) as error:
            apply_service_errors(form, error)
        else:
            replaced = (
                f", superseding license {license.supersedes_id}" if license.supersedes_id else ""
            )
            messages.success(
                request,
                f"{license.get_kind_display()} {license.pk} issued for "
                f"{subscription.name}{replaced}.",
            )
            return redirect(license)
    preview = None
    if subscription.is_self_managed:
        kind = form.data.get("kind") if form.is_bound else subscription.licensing_method
        if kind in LicenseKind.values:
            preview = _issue_preview(subscription, kind)
    return render(
        request,
        "licenses/license_issue.html",
        {"subscription": subscription, "form": form, "preview": preview},
    )


# --- Signing key and troubleshooting ------------------------------------------------------------


@role_required(Policy.can_view)
def signing_key(request):
    overview = selectors.signing_key_overview(actor=request.user)
    return render(
        request,
        "licenses/signing_key.html",
        {
            "overview": overview,
            "portal_url": request.build_absolute_uri("/").rstrip("/"),
            "public_key_filename": PUBLIC_KEY_FILENAME,
        },
    )


@role_required(Policy.can_view)
def signing_key_download(request):
    overview = selectors.signing_key_overview(actor=request.user)
    if not overview.public_key_pem:
        raise Http404("No license signing key is configured.")
    response = HttpResponse(overview.public_key_pem, content_type="application/x-pem-file")
    response["Content-Disposition"] = content_disposition_header(True, PUBLIC_KEY_FILENAME)
    return response


@role_required(Policy.can_troubleshoot)
@sensitive_post_parameters("text")  # error reports must not carry a pasted code or key
def troubleshoot(request):
    """POST only carries the pasted text (never a URL), and the form comes back empty: an
    activation code pasted here is not echoed back."""
    verdict = None
    form = TroubleshootForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        verdict = selectors.license_troubleshoot(actor=request.user, text=form.cleaned_data["text"])
        form = TroubleshootForm()
    response = render(request, "licenses/troubleshoot.html", {"form": form, "verdict": verdict})
    add_never_cache_headers(response)
    return response
