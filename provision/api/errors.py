"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"?}}."""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from provision.exceptions import ApplicationError


def exception_handler(exc, context):
    """DRF's handler, with the project's refusals and Django's errors in the one JSON shape."""
    if isinstance(exc, ApplicationError):
        body = {"error": {"code": exc.code, "message": exc.message, **exc.extra}}
        preview = getattr(exc, "preview", None)
        if preview is not None:
            # A fix refused because its target changed: what the fix would do now, and the
            # digest to confirm that with (provision.services.FixConflict).
            body["error"]["preview"] = preview.as_dict()
            body["error"]["preview_digest"] = preview.digest()
        http_status = status.HTTP_403_FORBIDDEN if exc.code == "forbidden" else 409
        return Response(body, status=http_status)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "message_dict") else exc.messages
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "error": {
                "code": "invalid",
                "message": "The request is not valid.",
                "fields": response.data,
            }
        }
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        response.data = {
            "error": {"code": getattr(exc, "default_code", "error"), "message": str(detail)}
        }
    return response
