"""Staff console pages of the usage app, namespace "usage" (included under /usage/).

Thin: selectors read, services write, one service call per POST.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse

from licenses import selectors as license_selectors
from licenses.choices import LicenseKind
from provision import permissions
from provision import selectors as provision_selectors
from provision.decorators import role_required
from provision.exceptions import ApplicationError
from provision.view_helpers import page_of, querystring_without_page
from usage import selectors, services
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
