"""Who may do what: one place per object type.

Roles are Django groups named after ``Role``. Superusers hold every role. Views, API views and
selectors ask these functions; nothing else decides access.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser

from provision.choices import Role

# Machine accounts (API tokens) are not staff: they may call machine endpoints only.
MACHINE_ROLES = frozenset({Role.INTEGRATION})
STAFF_ROLES = frozenset(Role.values) - MACHINE_ROLES
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
            groups = frozenset(user.groups.values_list("name", flat=True))
            # An integration account holds no staff role even if it was put in a staff group
            # by mistake: a leaked machine token must never read or change customer data.
            cached = groups & MACHINE_ROLES or groups & STAFF_ROLES
        user._provision_roles = cached
    return cached


def primary_role(user) -> str | None:
    roles = roles_of(user)
    for role in (Role.ADMIN, Role.SUPPORT_LEAD, Role.SUPPORT, Role.ACCOUNT_MANAGER):
        if role in roles:
            return role
    return None


def is_staff_member(user) -> bool:
    return bool(roles_of(user) & STAFF_ROLES)


def can_push_usage(user) -> bool:
    """Machine endpoints that take usage from outside (GitLab.com seat figures)."""
    return Role.INTEGRATION in roles_of(user)


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


class LicensePolicy:
    """Licenses, activation codes and their deliveries. Mirrors licenses/services.py: support
    roles issue, resend and download (``can_fix``); freeing a bound activation code (release)
    needs a lead (``can_approve``). Support may ask for a revoke; it runs once a second person,
    a lead, approves it (four-eyes: provision.fixes.LicenseRevoke, services.license_revoke)."""

    @staticmethod
    def can_view(user, license=None) -> bool:
        return is_staff_member(user)

    @staticmethod
    def can_issue(user, subscription=None) -> bool:
        return can_fix(user)

    @staticmethod
    def can_resend(user, license=None) -> bool:
        return can_fix(user)

    @staticmethod
    def can_download(user, license=None) -> bool:
        return can_fix(user)

    @staticmethod
    def can_release(user, activation_code=None) -> bool:
        return can_approve(user)

    @staticmethod
    def can_troubleshoot(user) -> bool:
        # Account managers paste keys from customers too; the page only reads.
        return is_staff_member(user)


class NamespacePolicy:
    """GitLab.com namespaces. Support links and unlinks them (``can_fix``); taking a namespace
    from another active subscription (Force Associate) or lowering its max seats used (waives a
    true-up) needs a lead (``can_approve``). Mirrors usage/services.py."""

    @staticmethod
    def can_view(user, namespace=None) -> bool:
        return is_staff_member(user)

    @staticmethod
    def can_associate(user, namespace=None) -> bool:
        return can_fix(user)

    @staticmethod
    def can_force_associate(user, namespace=None) -> bool:
        return can_approve(user)

    @staticmethod
    def can_disassociate(user, namespace=None) -> bool:
        return can_fix(user)

    @staticmethod
    def can_reset_max_seats(user, namespace=None) -> bool:
        return can_approve(user)
