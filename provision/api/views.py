from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from provision import permissions, selectors, services
from provision.api.base import (
    FixRequestFiledSerializer,
    SelectorReadOnlyViewSet,
    object_pk,
    submit_fix,
)
from provision.api.schema import ProvisionAutoSchema
from provision.api.serializers import (
    AuditEventSerializer,
    CustomerSerializer,
    FixApprovedSerializer,
    FixApproveInputSerializer,
    FixDecisionInputSerializer,
    FixDoneSerializer,
    FixInputSerializer,
    FixPreviewInputSerializer,
    FixPreviewSerializer,
    FixRequestSerializer,
    ProvisioningRecordSerializer,
    SeatsChangeInputSerializer,
    SubscriptionSerializer,
)
from provision.exceptions import ApplicationError
from provision.filters import (
    AuditEventFilterSet,
    CustomerFilterSet,
    FixRequestFilterSet,
    ProvisioningRecordFilterSet,
    SubscriptionFilterSet,
)
from provision.fixes import FIXES, form_params


class CustomerViewSet(SelectorReadOnlyViewSet):
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilterSet

    list_selector = staticmethod(selectors.customer_list)


class SubscriptionViewSet(SelectorReadOnlyViewSet):
    serializer_class = SubscriptionSerializer
    filterset_class = SubscriptionFilterSet

    list_selector = staticmethod(selectors.subscription_list)

    @extend_schema(
        request=SeatsChangeInputSerializer,
        responses={200: SubscriptionSerializer, 202: FixRequestFiledSerializer},
    )
    @action(detail=True, methods=["post"])
    def seats(self, request, pk=None):
        """Change the seat count (support roles), as the console's fix does: reason required,
        audited; a rise of more than 20% files a four-eyes request instead (202)."""
        if not permissions.SubscriptionPolicy.can_change_seats(request.user):
            raise ApplicationError("Changing seats needs a support role.", code="forbidden")
        subscription = self.get_object()
        data = SeatsChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return submit_fix(
            request,
            action="seats_change",
            target_pk=subscription.pk,
            params={"seats": data.validated_data["seats"]},
            data=data.validated_data,
            on_done=lambda: SubscriptionSerializer(self.get_object()).data,
        )


class ProvisioningRecordViewSet(SelectorReadOnlyViewSet):
    serializer_class = ProvisioningRecordSerializer
    filterset_class = ProvisioningRecordFilterSet

    list_selector = staticmethod(selectors.provisioning_record_list)


class AuditEventViewSet(SelectorReadOnlyViewSet):
    """The audit trail, read-only: there is no way to change or delete an event."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet

    list_selector = staticmethod(selectors.audit_event_list)


# --- Support fixes ------------------------------------------------------------------------------

FIX_PARAMETERS = [
    OpenApiParameter(
        "action",
        OpenApiTypes.STR,
        OpenApiParameter.PATH,
        enum=sorted(FIXES),
        description="The fix (provision.fixes.FIXES); docs/support-console.md describes each.",
    ),
    OpenApiParameter(
        # drf-spectacular names a ``pk`` path parameter ``id`` (SCHEMA_COERCE_PATH_PK).
        "id",
        OpenApiTypes.INT,
        OpenApiParameter.PATH,
        description="The target's id: a subscription, license, activation code, namespace, "
        "provisioning step or customer, depending on the fix.",
    ),
]


def _form_data(params: dict) -> dict:
    """JSON values as a form would receive them (strings); one value per field."""
    data, errors = {}, {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | dict):
            errors[name] = ["One value, not a list or an object."]
        elif isinstance(value, bool):
            data[name] = "true" if value else "false"
        else:
            data[name] = str(value)
    if errors:
        raise exceptions.ValidationError({"params": errors})
    return data


class FixBaseView(APIView):
    """What the fix endpoints share with the console's fix page (``provision.fix_views``): the
    fix by its key (404), its permission (403), its target (404) and its own form (400)."""

    schema = ProvisionAutoSchema()
    # ``params`` is an object: JSON only (a form post would flatten it).
    parser_classes = [JSONParser]

    def fix_and_target(self, request, action: str, pk):
        fix = FIXES.get(action)
        if fix is None:
            raise exceptions.NotFound("No such fix.")
        if not fix.allowed(request.user):
            raise ApplicationError("You do not have permission to make this fix.", code="forbidden")
        try:
            return fix, fix.get(object_pk(pk))
        except (fix.model.DoesNotExist, exceptions.NotFound) as error:
            raise exceptions.NotFound(f"No {fix.model._meta.verbose_name} {pk}.") from error

    def params(self, fix, target, raw: dict) -> dict:
        form = fix.params_form_class(target)(data=_form_data(raw))
        if not form.is_valid():
            errors = {
                ("non_field_errors" if name == "__all__" else name): [str(m) for m in messages]
                for name, messages in form.errors.items()
            }
            raise exceptions.ValidationError({"params": errors})
        return form_params(form)


class FixPreviewView(FixBaseView):
    """``POST /api/fixes/{action}/{pk}/preview/``: a fix's preview, nothing changed."""

    @extend_schema(
        operation_id="fixes_preview",
        parameters=FIX_PARAMETERS,
        request=FixPreviewInputSerializer,
        responses=FixPreviewSerializer,
    )
    def post(self, request, action: str, pk):
        """What a fix would do to its target now, changing nothing: the preview, its digest
        and the four-eyes rule that applies ("" when none). 409 when the fix does not apply
        (``not_applicable``) or would change nothing (``no_change``)."""
        fix, target = self.fix_and_target(request, action, pk)
        data = FixPreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = self.params(fix, target, data.validated_data["params"])
        unavailable = fix.unavailable(target)
        if unavailable:
            raise ApplicationError(unavailable, code="not_applicable")
        preview = fix.preview(target, params)
        body = {
            "action": fix.key,
            "target_type": target._meta.label_lower,
            "target_id": str(target.pk),
            "target_text": fix.describe(target),
            "preview": preview.as_dict(),
            "preview_digest": preview.digest(),
            "approval": fix.approval_rule(target, params, request.user),
        }
        return Response(FixPreviewSerializer(body).data)


class FixApplyView(FixBaseView):
    """``POST /api/fixes/{action}/{pk}/``: make the fix, or file it for a second person."""

    @extend_schema(
        operation_id="fixes_apply",
        parameters=FIX_PARAMETERS,
        request=FixInputSerializer,
        responses={200: FixDoneSerializer, 202: FixRequestFiledSerializer},
    )
    def post(self, request, action: str, pk):
        """Make a support fix through the same service as the console (``fix_submit``):
        reason required, audited. 200 with what was done, or 202 with the four-eyes request
        it filed when a second person must approve. With ``preview_digest``, 409
        (``conflict``, with the new ``preview`` and ``preview_digest``) if the target changed
        since that preview; nothing is done then."""
        fix, target = self.fix_and_target(request, action, pk)
        data = FixInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        params = self.params(fix, target, values["params"])
        outcome = services.fix_submit(
            actor=request.user,
            action=fix.key,
            target_pk=target.pk,
            params=params,
            reason_code=values["reason_code"],
            reason=values["reason"],
            ticket_url=values["ticket_url"],
            seen_digest=values["preview_digest"],
        )
        if outcome.request is not None:
            return Response(FixRequestFiledSerializer(outcome.request).data, status=202)
        done = {
            "action": fix.key,
            "target_type": target._meta.label_lower,
            "target_id": str(target.pk),
            "message": outcome.result.message,
            "url": outcome.result.redirect_url,
        }
        return Response(FixDoneSerializer(done).data)


class FixRequestViewSet(SelectorReadOnlyViewSet):
    """Four-eyes requests (pending first), and deciding them: a support lead other than the
    requester approves or rejects; the requester withdraws."""

    serializer_class = FixRequestSerializer
    filterset_class = FixRequestFilterSet

    list_selector = staticmethod(selectors.fix_request_list)

    @extend_schema(request=FixApproveInputSerializer, responses=FixApprovedSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """Approve (support leads, not the requester): the fix runs now, as you, with the
        request's parameters; 409 if its target changed since the request was filed."""
        if not permissions.can_approve(request.user):
            raise ApplicationError("Only a support lead can approve fixes.", code="forbidden")
        fix_request = self.get_object()
        data = FixApproveInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.fix_request_approve(
            actor=request.user, fix_request=fix_request, note=data.validated_data["note"]
        )
        body = {
            "fix_request": self.get_object(),
            "message": result.message,
            "url": result.redirect_url,
        }
        return Response(FixApprovedSerializer(body).data)

    @extend_schema(request=FixDecisionInputSerializer, responses=FixRequestSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        """Turn a request down, saying why (support leads, not the requester)."""
        if not permissions.can_approve(request.user):
            raise ApplicationError("Only a support lead can reject fixes.", code="forbidden")
        fix_request = self.get_object()
        data = FixDecisionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.fix_request_reject(
            actor=request.user, fix_request=fix_request, reason=data.validated_data["reason"]
        )
        return Response(FixRequestSerializer(self.get_object()).data)

    @extend_schema(request=FixDecisionInputSerializer, responses=FixRequestSerializer)
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        """Take your own pending request back, saying why."""
        fix_request = self.get_object()
        data = FixDecisionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.fix_request_withdraw(
            actor=request.user, fix_request=fix_request, reason=data.validated_data["reason"]
        )
        return Response(FixRequestSerializer(self.get_object()).data)
