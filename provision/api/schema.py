"""The OpenAPI side of the API's conventions: every operation documents the project's one JSON
error shape (``provision.api.errors``) for the statuses it can answer with, so clients and the
schemathesis run in CI know that a 400, 403 or 409 is part of the contract, not an accident."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from rest_framework import serializers


class ErrorBodySerializer(serializers.Serializer):
    """What went wrong: a stable code, a sentence for people, and for invalid input the fields
    at fault. Some refusals add their own keys (``fix_request``; a fix conflict adds the new
    ``preview`` and ``preview_digest``)."""

    code = serializers.CharField(help_text="e.g. invalid, not_found, forbidden, conflict.")
    message = serializers.CharField()
    fields = serializers.JSONField(
        required=False,
        help_text="For code=invalid: each field (or non_field_errors) with its messages.",
    )


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API: ``{"error": {"code", "message", "fields"?}}``."""

    error = ErrorBodySerializer()


class ProvisionAutoSchema(AutoSchema):
    """drf-spectacular's schema plus the error answers every operation can give.

    401/403: no or wrong credentials, or a role that may not do this. 400: invalid filters or
    body. 404: an unknown object, or a page past the end of a list. 409: a business refusal
    (no change, not applicable, a conflict with what changed meanwhile). 415: a body the
    endpoint cannot parse as its media type."""

    def _error_statuses(self) -> list[str]:
        statuses = ["401", "403"]
        is_list = self.method == "GET" and self._is_list_view()
        if self.method != "GET" or is_list:
            statuses.append("400")
        if "{" in self.path or is_list:
            statuses.append("404")
        if self.method == "POST":
            # 415: a body in a media type the endpoint does not parse (or cannot, malformed).
            statuses += ["409", "415"]
        return statuses

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        for name, field in force_instance(serializer).fields.items():
            if isinstance(field, serializers.URLField) and field.read_only:
                # Optional links (ticket_url) are stored and answered as "" when absent, which
                # is not a URI: a read-only link is documented as a string.
                prop = schema.get("properties", {}).get(name, {})
                prop.pop("format", None)
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status in self._error_statuses():
            if status not in responses:
                responses[status] = self._get_response_for_code(
                    ErrorSerializer, status, direction=direction
                )
        return responses
