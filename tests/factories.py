"""factory_boy factories. Domain objects are built through the services where that matters
(subscriptions get their provisioning record and ledger); plain rows use the ORM directly."""

import datetime as dt

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from provision import services
from provision.choices import Channel, ContactRole, Deployment, Plan
from provision.models import Contact, Customer, Partner
from usage.choices import SeatReportSource
from usage.models import Instance, Namespace, SeatReport


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@provision.test")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.add(*[Group.objects.get_or_create(name=role)[0] for role in extracted])
        if create:
            self.save()


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    name = factory.Sequence(lambda n: f"Partner {n} GmbH")
    email = factory.Sequence(lambda n: f"licenses{n}@partner.test")


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    billing_account_number = factory.Sequence(lambda n: f"A{n + 10_000_000:08d}")
    name = factory.Faker("company")
    email_domains = factory.Sequence(lambda n: [f"customer{n}.test"])
    salesforce_account_id = factory.Sequence(lambda n: f"001{n:015d}")


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    customer = factory.SubFactory(CustomerFactory)
    role = ContactRole.SOLD_TO
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.Sequence(lambda n: f"buyer{n}@customer.test")


_subscription_numbers = iter(range(10_000_000, 99_999_999))


def subscription_factory(customer=None, *, actor=None, **overrides):
    """Create a subscription through ``subscription_create`` (ledger, provisioning record)."""
    today = timezone.localdate()
    values = {
        "customer": customer or CustomerFactory(),
        "name": f"A-S{next(_subscription_numbers):08d}",
        "plan": Plan.PREMIUM,
        "deployment": Deployment.SELF_MANAGED,
        "term_start": today - dt.timedelta(days=30),
        "term_end": today + dt.timedelta(days=335),
        "seats": 50,
        "channel": Channel.SALES_ASSISTED,
        "reason": "Test order",
    }
    values.update(overrides)
    return services.subscription_create(actor=actor, **values)


class InstanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Instance

    hostname = factory.Sequence(lambda n: f"gitlab{n}.customer.test")
    version = "17.5.1-ee"
    last_seen_at = factory.LazyFunction(timezone.now)
    last_sync_at = factory.LazyFunction(timezone.now)


class NamespaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Namespace

    gitlab_namespace_id = factory.Sequence(lambda n: 9_000_000 + n)
    full_path = factory.Sequence(lambda n: f"group-{n}")
    name = factory.LazyAttribute(lambda ns: ns.full_path.title())


class SeatReportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SeatReport

    instance = factory.SubFactory(InstanceFactory)
    report_date = factory.LazyFunction(timezone.localdate)
    billable_users = 40
    max_historical_users = 45
    source = SeatReportSource.SEAT_LINK
