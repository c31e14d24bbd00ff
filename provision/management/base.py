"""Base class for Provision's management commands.

Stamps audit events written by a command with source "command" and a request id, and turns
the project's refusals into one readable line and a non-zero exit instead of a traceback.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from provision.context import new_request_id, reset_context, set_context
from provision.exceptions import ApplicationError


class ProvisionCommand(BaseCommand):
    def execute(self, *args, **options):
        token = set_context(request_id=f"cmd-{new_request_id()}", source="command")
        try:
            return super().execute(*args, **options)
        except ApplicationError as error:
            raise CommandError(error.message) from error
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        finally:
            reset_context(token)
