"""Staff console pages of CRM sync, namespace "crm_sync" (included under /crm/): the sync runs
list and a run's detail, and the customer page's "push now". Thin: selectors read, services
write, one service call per POST."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers

from crm_sync import selectors, services
from crm_sync.choices import CrmTarget, SyncRunStatus
from crm_sync.forms import CustomerPushForm
from crm_sync.models import SyncRun
from provision import permissions
from provision import selectors as provision_selectors
from provision.decorators import role_required
from provision.exceptions import ApplicationError
from provision.view_helpers import apply_service_errors, page_of, querystring_without_page

# Runs in these states are still moving: the list refreshes itself while one is on the page.
ACTIVE_RUN_STATUSES = (SyncRunStatus.QUEUED, SyncRunStatus.RUNNING)
# The htmx target of the runs list's self-refresh (the table card, not the filters).
RUNS_FRAGMENT_ID = "sync-runs"


def customer_crm_context(*, user, customer) -> dict:
    """What the customer page's "CRM sync" cards need: each target's last accepted state and
    row errors, whether the target is configured at all, and the "push now" form for those
    who may use it."""
    states = selectors.customer_crm_states(customer=customer)
    for entry in states:
        entry["configured"] = selectors.crm_target_configured(entry["target"])
    return {
        "crm_states": states,
        "can_push_to_crm": permissions.can_fix(user),
        "crm_push_form": CustomerPushForm(auto_id="crm-push-%s"),
    }


@role_required(permissions.is_staff_member)
def run_list(request):
    """Every sync run, newest first, with the shared ``SyncRunFilterSet`` filters."""
    runs, filterset = selectors.sync_run_list(actor=request.user, filters=request.GET)
    page = page_of(request, runs)
    template = "crm_sync/syncrun_list.html"
    if request.htmx and request.htmx.target == RUNS_FRAGMENT_ID:
        template = "crm_sync/_syncrun_table.html"
    response = render(
        request,
        template,
        {
            "filter": filterset,
            "page_obj": page,
            "querystring": querystring_without_page(request),
            "filtered": any(value for key, value in request.GET.items() if key != "page"),
            # Only what is on the page: polling stops by itself once those runs finish.
            "polling": any(run.status in ACTIVE_RUN_STATUSES for run in page),
            "fragment_id": RUNS_FRAGMENT_ID,
        },
    )
    # The same URL serves the whole page and the htmx fragment; caches must keep them apart.
    patch_vary_headers(response, ["HX-Request"])
    return response


@role_required(permissions.is_staff_member)
def run_detail(request, pk: int):
    """One run: counts, duration, trigger, its error in full and the rows the CRM rejected."""
    try:
        run, row_errors = selectors.sync_run_detail(actor=request.user, run_id=pk)
    except SyncRun.DoesNotExist:
        raise Http404("No such sync run.") from None
    return render(
        request,
        "crm_sync/syncrun_detail.html",
        {
            "run": run,
            "row_errors": row_errors,
            # sync_run_detail returns at most this many; the run's own count says how many more.
            "row_errors_capped": len(row_errors) >= 500,
            "polling": run.status in ACTIVE_RUN_STATUSES,
        },
    )


@role_required(permissions.can_fix)
def customer_push(request, pk: int):
    """Staff "push now" of one customer to every CRM, with a reason. The customer page posts
    here; a refused or incomplete form is shown again on this page with what is missing."""
    customer = provision_selectors.customer_get(actor=request.user, pk=pk)
    form = CustomerPushForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.crm_customer_push(
                actor=request.user,
                customer=customer,
                reason=form.cleaned_data["reason"],
                ticket_url=form.cleaned_data["ticket_url"],
            )
        except (ApplicationError, ValidationError) as error:
            apply_service_errors(form, error)
        else:
            labels = [label for _, label in CrmTarget.choices]
            messages.success(
                request, f"Queued a push of {customer.name} to {' and '.join(labels)}."
            )
            skipped = [
                label
                for target, label in CrmTarget.choices
                if not selectors.crm_target_configured(target)
            ]
            if skipped:
                messages.warning(
                    request,
                    f"Not configured, so skipped until credentials are set: {', '.join(skipped)}.",
                )
            return redirect(f"{customer.get_absolute_url()}#crm-sync")
    return render(
        request,
        "crm_sync/customer_push.html",
        {
            "customer": customer,
            "form": form,
            **customer_crm_context(user=request.user, customer=customer),
        },
    )
