from django.conf import settings

from provision import permissions


def console(request):
    """What the base layout needs: the user's role and what they may do."""
    user = getattr(request, "user", None)
    return {
        "console_role": permissions.primary_role(user),
        "console_can_fix": permissions.can_fix(user),
        "console_environment": settings.PROVISION_ENV,
    }
