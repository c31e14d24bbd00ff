"""Console pages of the support fixes and of their four-eyes requests.

One page serves every fix (``provision.fixes``): the fix's fields, a **preview** of exactly what
will change, then one confirming POST that calls ``services.fix_submit``. A fix without fields
shows its preview at once. The preview's digest travels with the form, so a fix confirmed on a
stale preview (somebody else acted meanwhile) is refused with the new preview, status 409.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from provision import permissions, selectors, services
from provision.decorators import role_required
from provision.exceptions import ApplicationError
from provision.fixes import FIXES, Fix, FixReasonForm, Preview, form_params
from provision.forms import FixDecisionForm
from provision.models import FixRequest
from provision.view_helpers import apply_service_errors, page_of, querystring_without_page


def _fix_and_target(request, action: str, pk: int):
    fix: Fix | None = FIXES.get(action)
    if fix is None:
        raise Http404("No such fix.")
    if not fix.allowed(request.user):
        raise PermissionDenied
    try:
        target = fix.get(pk)
    except fix.model.DoesNotExist as error:
        raise Http404(f"No {fix.model._meta.verbose_name} {pk}.") from error
    return fix, target


def _preview_or_error(fix: Fix, target, params_form) -> Preview | None:
    """The preview for valid params; a refusal (no change, not applicable) goes on the form."""
    try:
        return fix.preview(target, form_params(params_form))
    except (ApplicationError, ValidationError) as error:
        apply_service_errors(params_form, error)
        return None


@role_required(permissions.can_fix)
def fix_action(request, action: str, pk: int):
    """GET: the fix's fields (a fix without fields shows its preview at once).
    POST ``step=preview``: the preview of those fields. POST ``step=confirm``: run the fix, or
    file it for approval. POST ``step=edit``: back to the fields, values kept."""
    fix, target = _fix_and_target(request, action, pk)
    unavailable = fix.unavailable(target)
    params_class = fix.params_form_class(target)
    has_fields = bool(params_class.base_fields)
    reason_initial = {"reason_code": fix.default_reason_code}
    step = request.POST.get("step", "preview") if request.method == "POST" else "edit"
    preview, status = None, 200
    if request.method == "POST" and step != "edit" and not unavailable:
        params_form = params_class(request.POST)
        reason_form = FixReasonForm(request.POST)
    elif request.method == "POST":
        params_form = params_class(initial=request.POST.dict())
        reason_form = FixReasonForm(initial=request.POST.dict())
        step = "edit"
    else:
        params_form = params_class(data={} if not has_fields else None, initial=fix.initial(target))
        reason_form = FixReasonForm(initial=reason_initial)

    if not unavailable and params_form.is_bound and params_form.is_valid():
        preview = _preview_or_error(fix, target, params_form)
    if preview is None:
        step = "edit"
    elif (
        step == "confirm" and reason_form.is_valid() and reason_form.cleaned_data["preview_digest"]
    ):
        try:
            outcome = services.fix_submit(
                actor=request.user,
                action=fix.key,
                target_pk=target.pk,
                params=form_params(params_form),
                reason_code=reason_form.cleaned_data["reason_code"],
                reason=reason_form.cleaned_data["reason"],
                ticket_url=reason_form.cleaned_data["ticket_url"],
                seen_digest=reason_form.cleaned_data["preview_digest"],
            )
        except services.FixConflict as conflict:
            reason_form.add_error(None, conflict.message)
            preview, status = conflict.preview, 409
        except (ApplicationError, ValidationError) as error:
            apply_service_errors(reason_form, error)
        else:
            return _fix_done(request, fix, outcome)
    else:
        step = "confirm"
        if request.method == "GET" or request.POST.get("step") != "confirm":
            # First showing of this preview: the reason fields start clean, not in error.
            reason_form = FixReasonForm(initial=reason_initial | request.POST.dict())
    if preview is not None:
        step = "confirm"
        # The digest of the preview on screen goes back with the confirming POST.
        reason_form.data = reason_form.data.copy() if reason_form.is_bound else reason_form.data
        if reason_form.is_bound:
            reason_form.data["preview_digest"] = preview.digest()
        else:
            reason_form.initial = reason_form.initial | {"preview_digest": preview.digest()}
    approval = fix.approval_rule(target, form_params(params_form), request.user) if preview else ""
    return render(
        request,
        "provision/fix_action.html",
        {
            "fix": fix,
            "target": target,
            "target_text": fix.describe(target),
            "back_url": fix.back_url(target),
            "customer": fix.customer_of(target),
            "unavailable": unavailable,
            "params_form": params_form,
            "reason_form": reason_form,
            "form": reason_form,
            "has_fields": has_fields,
            "step": step,
            "preview": preview,
            "approval": approval,
        },
        status=status,
    )


def _fix_done(request, fix: Fix, outcome):
    if outcome.request is not None:
        fix_request = outcome.request
        messages.info(
            request,
            f"Request #{fix_request.pk} is waiting for a support lead's approval: "
            f"{fix_request.why_approval}",
        )
        return redirect(fix_request)
    result = outcome.result
    _say_what_happened(request, result)
    if result.template:
        # A secret shown once (a new activation code): rendered in this response only, never
        # put in the session or a URL, and never cached.
        response = render(request, result.template, result.context)
        add_never_cache_headers(response)
        return response
    return redirect(result.redirect_url)


def _say_what_happened(request, result) -> None:
    """The fix's message; for an e-mail, what became of it once the commit sent it (sent with
    its proof, failed with the reason, or still queued for the worker)."""
    delivery = result.delivery
    if delivery is None:
        messages.success(request, result.message)
        return
    delivery.refresh_from_db()
    if delivery.status == "sent":
        messages.success(
            request, f"{result.delivered_what} e-mailed to {delivery.recipient_email}."
        )
    elif delivery.status == "failed":
        messages.error(
            request,
            f"{result.delivered_what} could not be e-mailed to {delivery.recipient_email}: "
            f"{delivery.error}",
        )
    else:
        messages.success(request, result.message)


# --- Four-eyes requests ------------------------------------------------------------------------


@role_required(permissions.is_staff_member)
def fix_request_list(request):
    """Pending requests first for leads; everyone sees the list (account managers read)."""
    requests, filterset = selectors.fix_request_list(actor=request.user, filters=request.GET)
    return render(
        request,
        "provision/fixrequest_list.html",
        {
            "filter": filterset,
            "page_obj": page_of(request, requests),
            "querystring": querystring_without_page(request),
            "can_approve": permissions.can_approve(request.user),
        },
    )


@role_required(permissions.is_staff_member)
def fix_request_detail(request, pk: int):
    fix_request = selectors.fix_request_get(actor=request.user, pk=pk)
    fix = FIXES.get(fix_request.action)
    live_preview, live_error = None, ""
    if fix_request.state == "pending" and fix is not None:
        try:
            target = fix.get(fix_request.target_id)
            live_preview = fix.preview(target, fix_request.params)
        except fix.model.DoesNotExist:
            live_error = f"{fix_request.target_text} no longer exists."
        except (ApplicationError, ValidationError) as error:
            live_error = getattr(error, "message", None) or "; ".join(error.messages)
    requested = Preview.from_dict(fix_request.preview)
    user = request.user
    return render(
        request,
        "provision/fixrequest_detail.html",
        {
            "fix_request": fix_request,
            "fix": fix,
            "preview": requested,
            "changed": live_preview is not None and live_preview.digest() != requested.digest(),
            "live_preview": live_preview,
            "live_error": live_error,
            "can_decide": fix_request.state == "pending"
            and permissions.can_approve(user)
            and fix_request.requested_by_id != user.pk,
            "is_requester": fix_request.state == "pending"
            and fix_request.requested_by_id == user.pk,
            "decision_form": FixDecisionForm(),
        },
    )


def _decide(request, pk: int, decide):
    fix_request = get_object_or_404(FixRequest, pk=pk)
    form = FixDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why: " + "; ".join(form.errors.get("note", ["a note"])))
        return redirect(fix_request)
    try:
        message = decide(fix_request, form.cleaned_data["note"])
    except (ApplicationError, ValidationError) as error:
        messages.error(request, getattr(error, "message", None) or "; ".join(error.messages))
    else:
        messages.success(request, message)
    return redirect(fix_request)


@role_required(permissions.can_approve)
@require_POST
def fix_request_approve(request, pk: int):
    def decide(fix_request, note):
        result = services.fix_request_approve(
            actor=request.user, fix_request=fix_request, note=note
        )
        return f"Approved request #{fix_request.pk}. {result.message}"

    return _decide(request, pk, decide)


@role_required(permissions.can_approve)
@require_POST
def fix_request_reject(request, pk: int):
    def decide(fix_request, note):
        services.fix_request_reject(actor=request.user, fix_request=fix_request, reason=note)
        return f"Rejected request #{fix_request.pk}; nothing was changed."

    return _decide(request, pk, decide)


@role_required(permissions.can_fix)
@require_POST
def fix_request_withdraw(request, pk: int):
    def decide(fix_request, note):
        services.fix_request_withdraw(actor=request.user, fix_request=fix_request, reason=note)
        return f"Withdrew request #{fix_request.pk}."

    return _decide(request, pk, decide)
