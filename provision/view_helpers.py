"""Small pieces every console view module shares: service refusals on forms, list paging."""

from django.core.paginator import Paginator

from provision.exceptions import ApplicationError

LIST_PAGE_SIZE = 50


def apply_service_errors(form, error) -> None:
    """Show a service's refusal on the form instead of a 500."""
    if isinstance(error, ApplicationError):
        form.add_error(None, error.message)
        return
    if hasattr(error, "message_dict"):
        for field, field_errors in error.message_dict.items():
            target = field if field in form.fields else None
            for message in field_errors:
                form.add_error(target, message)
    else:
        for message in error.messages:
            form.add_error(None, message)


def page_of(request, queryset, size: int = LIST_PAGE_SIZE):
    return Paginator(queryset, size).get_page(request.GET.get("page"))


def querystring_without_page(request) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()
