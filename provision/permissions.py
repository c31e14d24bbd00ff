"""Who may do what: one place per object type.

Roles are Django groups named after ``Role``. Superusers hold every role. Views, API views and
selectors ask these functions; nothing else decides access.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser

from provision.choices import Role

STAFF_ROLES = frozenset(Role.values)
FIX_ROLES = frozenset({Role.SUPPORT, Role.SUPPORT_LEAD, Role.ADMIN})
APPROVE_ROLES = frozenset({Role.SUPPORT_LEAD, Role.ADMIN})


def roles_of(user) -> frozenset[str]:
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return frozenset()
    if not user.is_active:
        return frozenset()
    cached = getattr(user, "_provision_roles", None)
    if cached is None:
        if user.is_superuser:
            cached = STAFF_ROLES
        else:
            cached = frozenset(user.groups.values_list("name", flat=True)) & STAFF_ROLES
        user._provision_roles = cached
    return cached


def primary_role(user) -> str | None:
    roles = roles_of(user)
    for role in (Role.ADMIN, Role.SUPPORT_LEAD, Role.SUPPORT, Role.ACCOUNT_MANAGER):
        if role in roles:
            return role
    return None


def is_staff_member(user) -> bool:
    return bool(roles_of(user))


def can_fix(user) -> bool:
    """Support actions that change customer state (edit, seats, re-issue, …)."""
    return bool(roles_of(user) & FIX_ROLES)


def can_approve(user) -> bool:
    """Risky fixes that need a lead's approval."""
    return bool(roles_of(user) & APPROVE_ROLES)


def is_account_manager_only(user) -> bool:
    return roles_of(user) == frozenset({Role.ACCOUNT_MANAGER})


class CustomerPolicy:
    """Every staff role reads every customer; account managers see their book by default."""

    @staticmethod
    def can_view(user, customer=None) -> bool:
        return is_staff_member(user)

    @staticmethod
    def can_edit(user, customer=None) -> bool:
        return can_fix(user)

    @staticmethod
    def can_add_note(user, customer=None) -> bool:
        return is_staff_member(user)


class SubscriptionPolicy:
    @staticmethod
    def can_view(user, subscription=None) -> bool:
        return is_staff_member(user)

    @staticmethod
    def can_change_seats(user, subscription=None) -> bool:
        return can_fix(user)

    @staticmethod
    def can_approve_seat_reduction(user, subscription=None) -> bool:
        return can_approve(user)


class AuditPolicy:
    @staticmethod
    def can_view(user) -> bool:
        return is_staff_member(user)
