from rest_framework import exceptions, serializers, viewsets
from rest_framework.response import Response

from provision.api.pagination import ProvisionPagination
from provision.api.schema import ProvisionAutoSchema
from provision.choices import ReasonCode

# Primary keys are 64-bit integers; anything else in the URL is an unknown object (404), not a
# database error (SQLite cannot even bind a larger integer).
PK_MAX = 2**63 - 1


def object_pk(value) -> int:
    """The primary key in a URL as an int; a JSON 404 when it cannot be one."""
    text = str(value)
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= PK_MAX:
        raise exceptions.NotFound()
    return int(text)


class SelectorReadOnlyViewSet(viewsets.ReadOnlyModelViewSet):
    """A read-only viewset whose rows come from a list selector (visibility, query shape).

    Subclasses set ``list_selector`` (returning ``(queryset, filterset)``), ``filterset_class``
    and ``serializer_class``.
    """

    list_selector = None
    schema = ProvisionAutoSchema()
    pagination_class = ProvisionPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            # Schema generation has no user; it only needs the model to type the fields.
            return self.filterset_class._meta.model.objects.none()
        queryset, _ = type(self).list_selector(actor=self.request.user)
        return queryset

    def get_object(self):
        lookup = self.lookup_url_kwarg or self.lookup_field
        self.kwargs[lookup] = object_pk(self.kwargs[lookup])
        return super().get_object()


class FixRequestFiledSerializer(serializers.Serializer):
    """The answer when a fix waits for a second person: 202 with the request to follow."""

    fix_request = serializers.IntegerField(source="pk")
    action = serializers.CharField()
    state = serializers.CharField()
    why_approval = serializers.CharField()
    url = serializers.SerializerMethodField()

    def get_url(self, fix_request) -> str:
        return fix_request.get_absolute_url()


def submit_fix(request, *, action: str, target_pk: int, params: dict, data: dict, on_done):
    """Run a console fix from the API through the same ``fix_submit`` as the pages: the fix's
    own answer (``on_done()``) with 200, or 202 and the four-eyes request it filed."""
    from provision import services

    outcome = services.fix_submit(
        actor=request.user,
        action=action,
        target_pk=target_pk,
        params=params,
        reason_code=data.get("reason_code") or ReasonCode.INTERNAL_REQUEST,
        reason=data["reason"],
        ticket_url=data.get("ticket_url", ""),
    )
    if outcome.request is not None:
        return Response(FixRequestFiledSerializer(outcome.request).data, status=202)
    return Response(on_done())


def reason_code_field():
    """The fixed-list reason of an API fix; internal tools call the API, hence the default."""
    return serializers.ChoiceField(
        choices=ReasonCode.choices, required=False, default=ReasonCode.INTERNAL_REQUEST
    )
