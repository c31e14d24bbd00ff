from rest_framework.permissions import BasePermission

from provision import permissions


class CanPushUsage(BasePermission):
    """Machine endpoints: only integration accounts (API token) push usage figures."""

    message = "An integration account's API token is required."

    def has_permission(self, request, view):
        return permissions.can_push_usage(request.user)
