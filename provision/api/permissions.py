from rest_framework.permissions import BasePermission

from provision import permissions


class IsStaffRole(BasePermission):
    """Any Provision staff role may read; operations check their own policy."""

    message = "A Provision staff role is required."

    def has_permission(self, request, view):
        return permissions.is_staff_member(request.user)
