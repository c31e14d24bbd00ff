"""One small, realistic book of customers on which every support fix has a target.

``build_world()`` makes, through the services (never raw rows):
- Acme: a self-managed offline-cloud subscription with an issued license file, a sold-to
  contact and its provisioning record (delivery and activation pending);
- Beta: a self-managed online-cloud subscription whose activation code is bound to an instance;
- Gamma: a GitLab.com subscription with a linked namespace, another GitLab.com subscription of
  Delta whose namespace is still open (so associating it means Force associate), and a free
  namespace.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.utils import timezone

from licenses import services as license_services
from licenses.choices import LicenseKind
from provision.choices import Deployment, LicensingMethod, ProvisioningStepKind, Role
from provision.models import ProvisioningStep
from tests.factories import (
    ContactFactory,
    CustomerFactory,
    NamespaceFactory,
    UserFactory,
    subscription_factory,
)
from usage import services as usage_services


@dataclass
class World:
    offline: object
    offline_license: object
    online: object
    online_code: object
    saas: object
    saas_namespace: object
    other_saas: object
    occupied_namespace: object
    free_namespace: object
    delivered_step: object
    lead: object


def build_world() -> World:
    lead = UserFactory(username="world.lead", roles=[Role.SUPPORT_LEAD])
    acme = CustomerFactory(name="Acme Robotics", email_domains=["acme.test"])
    ContactFactory(customer=acme, email="buyer@acme.test", first_name="Bea", last_name="Buyer")
    offline = subscription_factory(acme, seats=50, licensing_method=LicensingMethod.OFFLINE_CLOUD)
    offline_license = license_services.license_issue(
        actor=None, subscription=offline, kind=LicenseKind.OFFLINE_CLOUD, reason="Order"
    )
    delivered_step = ProvisioningStep.objects.get(
        record__subscription=offline, kind=ProvisioningStepKind.DELIVERED
    )

    beta = CustomerFactory(name="Beta Labs", email_domains=["beta.test"])
    ContactFactory(customer=beta, email="owner@beta.test")
    online = subscription_factory(beta, seats=20, licensing_method=LicensingMethod.ONLINE_CLOUD)
    online_code, code = license_services.activation_code_generate(
        actor=None, subscription=online, reason="Order"
    )
    license_services.activation_activate(
        activation_code=code,
        instance_identifier=str(uuid.uuid4()),
        hostname="gitlab.beta.test",
        client_ip=None,
    )

    gamma = CustomerFactory(name="Gamma Cloud", email_domains=["gamma.test"])
    ContactFactory(customer=gamma, email="admin@gamma.test")
    saas = subscription_factory(gamma, seats=30, deployment=Deployment.GITLAB_COM)
    saas_namespace = NamespaceFactory(full_path="gamma-group", seats_in_use=25, max_seats_used=34)
    usage_services.namespace_associate(
        actor=None, namespace=saas_namespace, subscription=saas, reason="Order"
    )
    delta = CustomerFactory(name="Delta Works", email_domains=["delta.test"])
    ContactFactory(customer=delta, email="it@delta.test")
    other_saas = subscription_factory(delta, seats=10, deployment=Deployment.GITLAB_COM)
    occupied_namespace = NamespaceFactory(full_path="delta-group", seats_in_use=8, max_seats_used=9)
    usage_services.namespace_associate(
        actor=None, namespace=occupied_namespace, subscription=other_saas, reason="Order"
    )
    free_namespace = NamespaceFactory(full_path="fresh-group", seats_in_use=3, max_seats_used=3)
    for step in ProvisioningStep.objects.filter(state="pending"):
        # Everything is overdue: the stuck queue and the retry fix have work.
        ProvisioningStep.objects.filter(pk=step.pk).update(
            due_at=timezone.now() - dt.timedelta(days=2)
        )
    delivered_step.refresh_from_db()
    return World(
        offline=offline,
        offline_license=offline_license,
        online=online,
        online_code=online_code,
        saas=saas,
        saas_namespace=saas_namespace,
        other_saas=other_saas,
        occupied_namespace=occupied_namespace,
        free_namespace=free_namespace,
        delivered_step=delivered_step,
        lead=lead,
    )
