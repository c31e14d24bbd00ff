from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action

from licenses import selectors
from licenses.api.serializers import (
    ActivationSerializer,
    LicenseDetailSerializer,
    LicenseRevokeInputSerializer,
    LicenseSerializer,
)
from licenses.filters import ActivationFilterSet, LicenseFilterSet
from provision import permissions
from provision.api.base import (
    FixRequestFiledSerializer,
    SelectorReadOnlyViewSet,
    object_pk,
    submit_fix,
)
from provision.exceptions import ApplicationError


class LicenseViewSet(SelectorReadOnlyViewSet):
    """Issued licenses, never with their keys (``key_sha256`` identifies one); one license
    (``/api/licenses/{id}/``) adds its encoded attributes and chain."""

    serializer_class = LicenseSerializer
    filterset_class = LicenseFilterSet

    list_selector = staticmethod(selectors.license_list)

    def get_serializer_class(self):
        if self.action == "retrieve":
            return LicenseDetailSerializer
        return LicenseSerializer

    def get_object(self):
        # The detail shape (chain, signing key) and its 403/404 come from the selector.
        return selectors.license_get(actor=self.request.user, pk=object_pk(self.kwargs["pk"]))

    @extend_schema(
        request=LicenseRevokeInputSerializer,
        responses={200: LicenseDetailSerializer, 202: FixRequestFiledSerializer},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Ask to revoke a license (support roles). Every revoke needs a second person: this
        files the request (202); a support lead approves it in the console."""
        if not permissions.can_fix(request.user):
            raise ApplicationError("Revoking a license needs a support role.", code="forbidden")
        license = self.get_object()
        data = LicenseRevokeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return submit_fix(
            request,
            action="license_revoke",
            target_pk=license.pk,
            params={},
            data=data.validated_data,
            on_done=lambda: LicenseDetailSerializer(self.get_object()).data,
        )


class ActivationViewSet(SelectorReadOnlyViewSet):
    serializer_class = ActivationSerializer
    filterset_class = ActivationFilterSet

    list_selector = staticmethod(selectors.activation_list)
