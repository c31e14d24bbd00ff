from django.conf import settings
from django.utils.functional import SimpleLazyObject

from provision import permissions


def console(request):
    """What the base layout needs: the user's role and what they may do."""
    user = getattr(request, "user", None)
    return {
        "console_role": permissions.primary_role(user),
        "console_can_fix": permissions.can_fix(user),
        "console_environment": settings.PROVISION_ENV,
        # Counted only when the layout shows it, and only for those who approve (one query).
        "console_pending_approvals": SimpleLazyObject(
            lambda: _pending_approvals(user) if permissions.can_approve(user) else 0
        ),
    }


def _pending_approvals(user) -> int:
    from provision.selectors import fix_requests_pending_count

    return fix_requests_pending_count(actor=user)
