"""E-mail for license deliveries: the one module that talks to Django's mail API.

Messages are composed here from a ``LicenseDelivery`` row (and, for an activation code, the
plaintext handed over in memory by the service that generated it). Nothing here writes to the
database; the services record the outcome. Errors come back as ``DeliveryError`` saying
whether trying again later could help, after Healthchecks' ``TransportError(permanent=...)``.
"""

from __future__ import annotations

import smtplib
from email.utils import make_msgid, parseaddr

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from licenses.choices import DeliveryMethod
from licenses.models import LicenseDelivery

# Seconds to wait for the mail server: a stuck server must not hold a web worker or a task.
SMTP_TIMEOUT = 20
LICENSE_MIMETYPE = "application/octet-stream"


class DeliveryError(Exception):
    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.message = message
        self.transient = transient


def license_filename(license) -> str:
    """``A-S00012345_42.gitlab-license``: the subscription, then the license id."""
    return f"{license.subscription.name}_{license.pk}.gitlab-license"


def _message_id() -> str:
    # The domain of the sender address, so ids look like the mail they belong to and no DNS
    # lookup of this host is needed (make_msgid's default).
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "provision.localhost"
    return make_msgid(domain=domain)


def _greeting(delivery: LicenseDelivery) -> str:
    if delivery.method == DeliveryMethod.PARTNER and delivery.partner is not None:
        return f"Hello {delivery.partner.name},"
    if delivery.recipient_contact is not None:
        return f"Hello {delivery.recipient_contact.first_name},"
    return "Hello,"


def _activation_code_message(delivery: LicenseDelivery, code: str) -> tuple[str, str]:
    subscription = delivery.activation_code.subscription
    customer = subscription.customer
    for_partner = delivery.method == DeliveryMethod.PARTNER
    subject = f"GitLab activation code for {subscription.name}"
    intro = (
        f"here is the activation code for your customer {customer.name}, subscription "
        f"{subscription.name}. Please pass it on to them securely."
        if for_partner
        else f"here is the activation code for your GitLab subscription {subscription.name}."
    )
    body = f"""{_greeting(delivery)}

{intro}

Plan: {subscription.get_plan_display()}, {subscription.seats} seats, \
{subscription.term_start:%Y-%m-%d} to {subscription.term_end:%Y-%m-%d}

Activation code:

    {code}

To activate, sign in to GitLab as an administrator, open Admin > Subscription, paste the code \
under "Activate cloud license" and select Activate. GitLab then downloads your license and \
keeps it up to date with a daily sync, so the instance must be able to reach the licensing \
service over HTTPS.

This code replaces any code sent before for this subscription; earlier codes no longer work. \
Keep it private: it activates one GitLab instance.
"""
    return subject, body


def _license_message(delivery: LicenseDelivery) -> tuple[str, str]:
    license = delivery.license
    subscription = license.subscription
    subject = f"GitLab license for {subscription.name}"
    body = f"""{_greeting(delivery)}

attached is the GitLab license file for subscription {subscription.name} \
({license.licensee_company}).

Kind: {license.get_kind_display()}
Plan: {license.plan}, {license.user_count} users
Valid: {license.starts_on:%Y-%m-%d} to {license.expires_on:%Y-%m-%d}

To install it, sign in to GitLab as an administrator, open Admin > Subscription, choose \
"Add license", upload the attached {license_filename(license)} file and accept the terms.
"""
    return subject, body


def send_delivery(delivery: LicenseDelivery, *, code: str | None = None) -> str:
    """Send the e-mail a delivery describes and return its Message-ID."""
    if delivery.activation_code_id:
        if not code:
            raise DeliveryError("No activation code to send.", transient=False)
        subject, body = _activation_code_message(delivery, code)
        attachments = []
    else:
        subject, body = _license_message(delivery)
        attachments = [(license_filename(delivery.license), delivery.license.key, LICENSE_MIMETYPE)]
    message_id = _message_id()
    message = EmailMessage(
        subject=subject,
        body=body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[delivery.recipient_email],
        headers={"Message-ID": message_id},
        attachments=attachments,
        connection=get_connection(timeout=SMTP_TIMEOUT),
    )
    try:
        message.send(fail_silently=False)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
        raise DeliveryError(f"The mail server refused the message: {exc}", transient=False) from exc
    except smtplib.SMTPResponseException as exc:
        # 4xx replies are "try again later"; 5xx are final.
        raise DeliveryError(
            f"The mail server answered {exc.smtp_code}: {exc.smtp_error!r}",
            transient=exc.smtp_code < 500,
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(
            f"Could not reach the mail server: {exc.__class__.__name__}: {exc}", transient=True
        ) from exc
    return message_id
