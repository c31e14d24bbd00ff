import logging
import re

from provision.context import get_context, new_request_id, reset_context, set_context

# Accept a caller's id only if it looks like one, so logs and audit rows cannot be injected into.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Give every request an id, echo it in ``X-Request-ID`` and stamp it on audit events."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else new_request_id()
        request.request_id = request_id
        source = "api" if request.path.startswith("/api/") else "ui"
        if request.path.startswith("/admin/"):
            source = "admin"
        token = set_context(request_id=request_id, source=source)
        try:
            response = self.get_response(request)
        finally:
            reset_context(token)
        response["X-Request-ID"] = request_id
        return response


class RequestIdLogFilter(logging.Filter):
    def filter(self, record):
        record.request_id = get_context().request_id or "-"
        return True
