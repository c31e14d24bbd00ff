"""Realistic demo data for ``make demo`` (``manage.py seed_demo``).

What it builds: one login per staff role (plus three more account managers so books differ),
~200 customers with contacts, five channel partners, ~300 subscriptions (renewal chains,
trials, churned and upcoming terms, add-ons), licenses and activation codes, self-managed
instances and GitLab.com namespaces with 120 days of seat reports and daily rollups, provisioning
records at every stage (some stuck, two failed) and staff notes.

How: every domain write goes through its service (customers, contacts, partners, subscriptions,
seats, provisioning steps, notes, licenses), so the audit trail, seat ledger and provisioning
records are the ones the real flows write. Rows that have no service (instances, seat reports,
namespaces, rollups) are bulk-inserted. One fixed seed drives Faker and ``random``; dates are
relative to ``today``, so two runs on the same day build the same data.

Idempotent: demo customers are recognised by their billing account numbers; when present,
nothing is written except that the logins are re-asserted with the demo password.
"""

from __future__ import annotations

import math
import random
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify
from faker import Faker

from provision import selectors, services
from provision.choices import (
    TRIAL_PLANS,
    ActorKind,
    AddOnKind,
    Channel,
    ContactRole,
    Deployment,
    LicensingMethod,
    PartnerKind,
    Plan,
    ProvisioningStepKind,
    ReasonCode,
    Role,
    StepState,
    SubscriptionStatus,
)
from provision.models import Customer, ProvisioningStep, SeatLedgerEntry, Subscription
from usage.choices import SeatReportSource
from usage.models import Instance, Namespace, SeatReport, SubscriptionUsageDaily

DEMO_SEED = 20_240_917
CUSTOMER_COUNT = 200
REPORT_DAYS = 120
# Demo billing accounts are A00010001…A00010200 and subscriptions A-S00010001…: a range that
# real-looking test factories (A1…) and seed_scale (A5…) never use, so the demo can find itself.
BILLING_ACCOUNT_FIRST = 10_001
SUBSCRIPTION_NUMBER_FIRST = 10_001
DEMO_REASON = "Demo order"
TICKET_BASE = "https://support.example.com/tickets/"

User = get_user_model()


@dataclass(frozen=True)
class DemoLogin:
    username: str
    first_name: str
    last_name: str
    role: str
    superuser: bool = False


DEMO_LOGINS = (
    DemoLogin("support", "Sam", "Rivera", Role.SUPPORT),
    DemoLogin("lead", "Lee", "Okafor", Role.SUPPORT_LEAD),
    DemoLogin("am", "Alex", "Morgan", Role.ACCOUNT_MANAGER),
    DemoLogin("jordan.am", "Jordan", "Lindqvist", Role.ACCOUNT_MANAGER),
    DemoLogin("priya.am", "Priya", "Raman", Role.ACCOUNT_MANAGER),
    DemoLogin("kenji.am", "Kenji", "Watanabe", Role.ACCOUNT_MANAGER),
    DemoLogin("admin", "Ada", "Admin", Role.ADMIN, superuser=True),
)
# Books of different sizes, so the account-manager cockpit differs per login.
ACCOUNT_MANAGER_WEIGHTS = {"am": 35, "jordan.am": 25, "priya.am": 22, "kenji.am": 18}

LOCALES = (
    # locale, country, share, legal forms, top-level domain
    ("en_US", "US", 40, ("Inc.", "LLC", "Corp."), "com"),
    ("en_GB", "GB", 14, ("Ltd", "plc"), "co.uk"),
    ("de_DE", "DE", 14, ("GmbH", "AG"), "de"),
    ("fr_FR", "FR", 10, ("SA", "SAS"), "fr"),
    ("nl_NL", "NL", 7, ("B.V.", "N.V."), "nl"),
    ("es_ES", "ES", 5, ("S.L.", "S.A."), "es"),
    ("en_CA", "CA", 5, ("Inc.", "Ltd."), "ca"),
    ("sv_SE", "SE", 5, ("AB",), "se"),
)
INDUSTRIES = (
    "Robotics", "Analytics", "Logistics", "Financial", "Health", "Software", "Energy",
    "Aerospace", "Biotech", "Media", "Telecom", "Insurance", "Automotive", "Semiconductors",
    "Retail", "Payments", "Mobility", "Security", "Games", "Labs",
)  # fmt: skip
LEGAL_WORDS = re.compile(
    r"\b(inc|llc|corp|ltd|plc|gmbh|ag|sa|sas|bv|nv|sl|ab|hb|kgaa|co|kg|ev|and|und|et|y|"
    r"group|scoop|hnos|s|van|von|de|der|den|la|le|du|des|del)\b"
)
PARTNERS = (
    ("Northgate Cloud Partners Inc.", PartnerKind.RESELLER, "licensing@northgate-cloud.com"),
    ("Bluefin Systems Integration Ltd", PartnerKind.RESELLER, "orders@bluefin-si.co.uk"),
    ("Alpenwerk IT-Distribution GmbH", PartnerKind.DISTRIBUTOR, "lizenzen@alpenwerk-it.de"),
    ("Meridian DevOps Reseller Inc.", PartnerKind.RESELLER, "licenses@meridian-devops.com"),
    ("Fjord Digital Distribution AB", PartnerKind.DISTRIBUTOR, "licens@fjorddigital.se"),
)
GITLAB_VERSIONS = (
    "16.11.10-ee", "17.3.7-ee", "17.5.5-ee", "17.8.7-ee", "17.11.4-ee", "18.0.2-ee",
    "18.1.1-ee", "18.2.1-ee", "18.2.1-ee", "18.1.1-ee",
)  # fmt: skip
NOTE_TEMPLATES = (
    "Customer asked about moving from {plan} to Ultimate at renewal; follow up before {date}.",
    "Spoke with {contact} (technical): instance moved to a new host last week, Seat Link "
    "should resume once the proxy allows customers.gitlab.com.",
    "QBR scheduled for {date}. They expect to add ~{seats} developers next quarter.",
    "Procurement needs the quote re-issued to the new bill-to address.",
    "Air-gapped site: usage file is emailed by {contact} at the start of each month.",
    "Renewal at risk: usage is well below the purchased seats, champion left the company.",
    "True-up discussed on the call; customer agrees to the overage at reconciliation.",
    "Asked for a temporary extension while the PO goes through finance.",
)
ADD_ON_METRIC_TYPES = {
    AddOnKind.DUO_PRO: "code_suggestions",
    AddOnKind.DUO_ENTERPRISE: "duo_enterprise",
}


@dataclass
class SubscriptionPlan:
    """What one demo subscription should look like before it is created."""

    name: str
    deployment: str
    plan: str
    term_start: date
    term_end: date
    seats: int
    channel: str
    licensing_method: str | None
    add_ons: list
    renews: SubscriptionPlan | None = None
    auto_renew: bool = True
    quarterly_reconciliation: bool = True
    contract_overages_allowed: bool = True
    status: str = SubscriptionStatus.ACTIVE
    # How far the order got: see DemoBuilder.assign_stages.
    stage: str = "complete"
    subscription: Subscription | None = None


@dataclass
class Lineage:
    """A customer's subscriptions for one deployment that follow each other (renewals)."""

    customer: Customer
    deployment: str
    plans: list[SubscriptionPlan]
    profile: str = "steady"
    # Filled while generating usage:
    days: list[date] = field(default_factory=list)
    stopped_on: date | None = None
    reporter: Instance | Namespace | None = None

    @property
    def current(self) -> SubscriptionPlan:
        return self.plans[-1]

    def covering(self, day: date) -> SubscriptionPlan | None:
        for plan in self.plans:
            if plan.term_start <= day < plan.term_end:
                return plan
        return None


@dataclass
class DemoResult:
    created: bool
    logins: list[tuple[str, str, str]]
    counts: dict[str, int] = field(default_factory=dict)


# --- Logins -----------------------------------------------------------------------------------


def ensure_logins() -> dict[str, User]:
    """Create or repair the demo logins: the demo password, exactly the role's group."""
    users = {}
    for login in DEMO_LOGINS:
        user, _ = User.objects.get_or_create(
            username=login.username,
            defaults={"first_name": login.first_name, "last_name": login.last_name},
        )
        user.email = f"{login.username.replace('.', '-')}@provision.example.com"
        user.is_active = True
        user.is_staff = login.superuser
        user.is_superuser = login.superuser
        user.set_password(settings.DEMO_PASSWORD)
        user.save()
        user.groups.set([Group.objects.get_or_create(name=login.role)[0]])
        users[login.username] = user
    return users


def login_table() -> list[tuple[str, str, str]]:
    return [
        (login.username, settings.DEMO_PASSWORD, Role(login.role).label) for login in DEMO_LOGINS
    ]


def demo_billing_accounts() -> list[str]:
    return [f"A{BILLING_ACCOUNT_FIRST + i:08d}" for i in range(CUSTOMER_COUNT)]


def demo_present() -> bool:
    return Customer.objects.filter(billing_account_number__in=demo_billing_accounts()).exists()


def seed_demo(*, today: date | None = None) -> DemoResult:
    """Build the demo data set unless it is already there; always (re)assert the logins."""
    users = ensure_logins()
    if demo_present():
        return DemoResult(created=False, logins=login_table())
    # Fail before writing anything when licenses cannot be signed (the message says how to fix).
    from licenses.signing import configured_key

    configured_key()
    # One transaction: a failed run leaves nothing behind, so the next run starts clean.
    with transaction.atomic():
        builder = DemoBuilder(users=users, today=today or timezone.localdate())
        counts = builder.build()
    return DemoResult(created=True, logins=login_table(), counts=counts)


# --- The builder ------------------------------------------------------------------------------

# Stages an order can be left in (everything else is "complete"). The stuck ones are pending
# past their SLA; the others are normal work in progress.
STUCK_STAGES = frozenset({"awaiting_license", "delivered", "awaiting_namespace"})
SELF_MANAGED_FRESH_STAGES = (
    "delivery_failed",
    "delivery_failed",
    "awaiting_license",
    "delivered",
    "activated",
    "awaiting_license",
    "delivered",
    "activated",
)
GITLAB_COM_FRESH_STAGES = ("awaiting_namespace", "namespace_linked", "awaiting_namespace")


def _status_for_term(start: date, end: date, today: date) -> str:
    if end <= today:
        return SubscriptionStatus.EXPIRED
    if start > today:
        return SubscriptionStatus.PENDING
    return SubscriptionStatus.ACTIVE


class DemoBuilder:
    def __init__(self, *, users: dict[str, User], today: date):
        self.rng = random.Random(DEMO_SEED)
        self.support = users["support"]
        self.lead = users["lead"]
        self.account_managers = [users[name] for name in ACCOUNT_MANAGER_WEIGHTS]
        self.today = today
        self.now = timezone.now()
        self.window = [today - timedelta(days=REPORT_DAYS - 1 - i) for i in range(REPORT_DAYS)]
        self.fakers = {}
        for position, (locale, *_rest) in enumerate(LOCALES):
            fake = Faker(locale)
            fake.seed_instance(DEMO_SEED + position)
            self.fakers[locale] = fake
        self.partners = []
        self.customers: list[Customer] = []
        self.customer_domains: dict[int, str] = {}
        self.lineages: list[Lineage] = []
        self.plans: list[SubscriptionPlan] = []
        self.licenses = []
        self.activation_codes = 0
        self.reports: list[SeatReport] = []
        self.rollup_count = 0
        self._domains: set[str] = set()
        self._names: set[str] = set()
        self._paths: set[str] = set()
        self._namespace_ids: set[int] = set()
        self._sub_numbers = iter(range(SUBSCRIPTION_NUMBER_FIRST, SUBSCRIPTION_NUMBER_FIRST + 9999))

    def ticket(self) -> str:
        return f"{TICKET_BASE}{self.rng.randint(410_000, 499_999)}"

    def build(self) -> dict[str, int]:
        self.create_partners()
        self.create_customers()
        self.plan_subscriptions()
        self.assign_stages()
        self.create_subscriptions()
        # Usage before licenses: a renewal's license carries the true-up measured on the
        # subscription it renews.
        self.create_usage()
        self.issue_licenses()
        self.advance_provisioning()
        self.true_ups()
        self.pending_approvals()
        self.support_tickets()
        self.create_rollups()
        notes = self.add_notes()
        return {
            "partners": len(self.partners),
            "customers": len(self.customers),
            "subscriptions": len(self.plans),
            "licenses": len(self.licenses),
            "activation codes": self.activation_codes,
            "instances": sum(isinstance(lin.reporter, Instance) for lin in self.lineages),
            "namespaces": sum(isinstance(lin.reporter, Namespace) for lin in self.lineages),
            "seat reports": len(self.reports),
            "daily rollups": self.rollup_count,
            "stuck orders": sum(plan.stage in STUCK_STAGES for plan in self.plans),
            "failed deliveries": sum(plan.stage == "delivery_failed" for plan in self.plans),
            "notes": notes,
        }

    # -- Partners and customers ----------------------------------------------------------------

    def create_partners(self) -> None:
        for position, (name, kind, email) in enumerate(PARTNERS):
            self.partners.append(
                services.partner_create(
                    actor=self.support,
                    name=name,
                    kind=kind,
                    email=email,
                    salesforce_account_id=f"001P{position:02d}" + self._salesforce_tail(12),
                    reason="Demo partner onboarding",
                )
            )

    def _salesforce_tail(self, length: int) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return "".join(self.rng.choice(alphabet) for _ in range(length))

    def _company_name(self, fake: Faker, legal_forms) -> str:
        for _ in range(50):
            if self.rng.random() < 0.5:
                name = fake.company()
            else:
                name = (
                    f"{fake.last_name()} {self.rng.choice(INDUSTRIES)} "
                    f"{self.rng.choice(legal_forms)}"
                )
            if name not in self._names:
                self._names.add(name)
                return name
        raise RuntimeError("Faker ran out of distinct company names")

    def _domain_for(self, name: str, tld: str) -> str:
        words = [w for w in slugify(name).split("-") if w and not LEGAL_WORDS.fullmatch(w)]
        base = "-".join(words[:2]) or "company"
        if tld != "com" and self.rng.random() < 0.25:
            tld = "com"
        candidate, suffix = f"{base}.{tld}", 2
        while candidate in self._domains:
            candidate, suffix = f"{base}{suffix}.{tld}", suffix + 1
        self._domains.add(candidate)
        return candidate

    def create_customers(self) -> None:
        owners = self.rng.choices(
            self.account_managers, weights=list(ACCOUNT_MANAGER_WEIGHTS.values()), k=CUSTOMER_COUNT
        )
        partner_customers = set(self.rng.sample(range(CUSTOMER_COUNT), k=CUSTOMER_COUNT // 10))
        salesforce_ids = set()
        for index, billing_account in enumerate(demo_billing_accounts()):
            locale, country, _share, legal_forms, tld = self.rng.choices(
                LOCALES, weights=[entry[2] for entry in LOCALES]
            )[0]
            fake = self.fakers[locale]
            name = self._company_name(fake, legal_forms)
            domain = self._domain_for(name, tld)
            domains = [domain]
            if self.rng.random() < 0.15:
                extra = f"{domain.split('.')[0]}.io"
                if extra not in self._domains:
                    self._domains.add(extra)
                    domains.append(extra)
            salesforce_id = "001" + self._salesforce_tail(15)
            while salesforce_id in salesforce_ids:
                salesforce_id = "001" + self._salesforce_tail(15)
            salesforce_ids.add(salesforce_id)
            owner = owners[index]
            csm = None
            if self.rng.random() < 0.6:
                csm = self.rng.choice([am for am in self.account_managers if am != owner])
            gainsight_id = None
            if self.rng.random() < 0.85:
                gainsight_id = "1P02" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:20].upper()
            customer = services.customer_create(
                actor=self.support,
                billing_account_number=billing_account,
                name=name,
                email_domains=domains,
                salesforce_account_id=salesforce_id,
                gainsight_company_id=gainsight_id,
                account_owner=owner,
                csm=csm,
                partner=self.rng.choice(self.partners) if index in partner_customers else None,
                country=country,
                reason="Demo account created from Salesforce",
                ticket_url=self.ticket(),
            )
            self.customers.append(customer)
            self.customer_domains[customer.pk] = domain
            self._create_contacts(customer, fake, domain)

    def _create_contacts(self, customer: Customer, fake: Faker, domain: str) -> None:
        roles = [ContactRole.SOLD_TO]
        if self.rng.random() < 0.7:
            roles.append(ContactRole.BILL_TO)
        if self.rng.random() < 0.8:
            roles.append(ContactRole.TECHNICAL)
        used = set()
        for role in roles:
            first, last = fake.first_name(), fake.last_name()
            local = f"{slugify(first)}.{slugify(last)}".replace("-", "")
            if role == ContactRole.BILL_TO and self.rng.random() < 0.4:
                local = self.rng.choice(["accounts-payable", "billing", "finance", "procurement"])
            while local in used:
                local += str(self.rng.randint(1, 9))
            used.add(local)
            services.contact_create(
                actor=self.support,
                customer=customer,
                role=role,
                first_name=first,
                last_name=last,
                email=f"{local}@{domain}",
                phone=fake.phone_number()[:40],
                reason="Demo contact from Salesforce",
            )

    # -- Subscriptions ---------------------------------------------------------------------------

    def plan_subscriptions(self) -> None:
        # Exactly 300 subscriptions: 120 customers with one, 60 with two, 20 with three.
        counts = [1] * 120 + [2] * 60 + [3] * 20
        self.rng.shuffle(counts)
        for customer, count in zip(self.customers, counts, strict=True):
            # 0.72 gives ~65% self-managed overall: mixed customers add one of each.
            primary = Deployment.SELF_MANAGED if self.rng.random() < 0.72 else Deployment.GITLAB_COM
            other = (
                Deployment.GITLAB_COM
                if primary == Deployment.SELF_MANAGED
                else Deployment.SELF_MANAGED
            )
            if count == 1:
                shapes = [(primary, 1)]
            elif count == 2:
                shapes = [(primary, 2)] if self.rng.random() < 0.55 else [(primary, 1), (other, 1)]
            else:
                shapes = [(primary, 3)] if self.rng.random() < 0.4 else [(primary, 2), (other, 1)]
            for deployment, length in shapes:
                lineage = self._plan_lineage(customer, deployment, length)
                self.lineages.append(lineage)
                self.plans.extend(lineage.plans)

    def _seats(self) -> int:
        low, high = self.rng.choices(
            [(10, 50), (50, 200), (200, 1000), (1000, 5000)], weights=[35, 35, 22, 8]
        )[0]
        return max(5, round(self.rng.randint(low, high) / 5) * 5)

    def _add_ons(self, deployment: str, plan: str, seats: int) -> list[services.AddOnSpec]:
        add_ons = []
        if plan in TRIAL_PLANS:
            return add_ons
        roll = self.rng.random()
        if roll < 0.18:
            add_ons.append(services.AddOnSpec(AddOnKind.DUO_PRO, max(5, seats // 5 * 2)))
        elif roll < 0.26 and plan == Plan.ULTIMATE:
            add_ons.append(services.AddOnSpec(AddOnKind.DUO_ENTERPRISE, max(5, seats // 4)))
        if deployment == Deployment.GITLAB_COM:
            if self.rng.random() < 0.3:
                minutes = self.rng.choice([10_000, 50_000])
                add_ons.append(services.AddOnSpec(AddOnKind.COMPUTE_MINUTES, minutes))
            if self.rng.random() < 0.15:
                add_ons.append(services.AddOnSpec(AddOnKind.STORAGE, 10_240))
        return add_ons

    def _terms(self, length: int) -> tuple[list[tuple[date, date]], bool]:
        """The terms of a lineage, oldest first, and whether it is a trial."""
        rng, today, year = self.rng, self.today, timedelta(days=365)
        if length == 1:
            roll = rng.random()
            if roll < 0.05:  # a 30-day trial
                start = today - timedelta(days=rng.randint(0, 25))
                return [(start, start + timedelta(days=30))], True
            if roll < 0.11:  # churned: ended without a renewal
                end = today - timedelta(days=rng.randint(5, 90))
                return [(end - year, end)], False
            if roll < 0.15:  # a new customer whose term starts soon
                start = today + timedelta(days=rng.randint(3, 30))
                return [(start, start + year)], False
            if roll < 0.25:  # a multi-year deal
                start = today - timedelta(days=rng.randint(5, 700))
                return [(start, start + year * rng.choice([2, 3]))], False
            start = today - timedelta(days=rng.randint(2, 358))
            return [(start, start + year)], False
        if rng.random() < 0.2:
            # The renewal is booked and starts when the current term ends in a few weeks.
            end = today + timedelta(days=rng.randint(4, 40)) + year
        else:
            end = today + timedelta(days=rng.randint(35, 355))
        terms = []
        for _ in range(length):
            terms.insert(0, (end - year, end))
            end -= year
        return terms, False

    def _plan_lineage(self, customer: Customer, deployment: str, length: int) -> Lineage:
        rng = self.rng
        seats = self._seats()
        plan = Plan.ULTIMATE if rng.random() < 0.4 else Plan.PREMIUM
        licensing_method = None
        if deployment == Deployment.SELF_MANAGED:
            licensing_method = rng.choices(
                [
                    LicensingMethod.ONLINE_CLOUD,
                    LicensingMethod.OFFLINE_CLOUD,
                    LicensingMethod.LEGACY,
                ],
                weights=[75, 15, 10],
            )[0]
        if customer.partner_id:
            channel = Channel.PARTNER
        elif seats <= 50 and rng.random() < 0.6:
            channel = Channel.WEB_DIRECT
        else:
            channel = Channel.SALES_ASSISTED
        profile = rng.choices(["growth", "overage", "under", "steady"], weights=[30, 12, 15, 43])[0]
        terms, trial = self._terms(length)
        if trial:
            plan = Plan.ULTIMATE_TRIAL if plan == Plan.ULTIMATE else Plan.PREMIUM_TRIAL
            seats = rng.choice([10, 20, 25, 50])
            channel = Channel.PARTNER if customer.partner_id else Channel.WEB_DIRECT
        plans, previous = [], None
        for position, (start, end) in enumerate(terms):
            if previous is not None:
                # Renewals grow, and some move up to Ultimate.
                seats = max(5, round(seats * rng.uniform(1.0, 1.35) / 5) * 5)
                if plan == Plan.PREMIUM and rng.random() < 0.15:
                    plan = Plan.ULTIMATE
            is_last = position == len(terms) - 1
            add_ons = []
            if is_last or rng.random() < 0.5:
                add_ons = self._add_ons(deployment, plan, seats)
            sub_plan = SubscriptionPlan(
                name=f"A-S{next(self._sub_numbers):08d}",
                deployment=deployment,
                plan=plan,
                term_start=start,
                term_end=end,
                seats=seats,
                channel=channel,
                licensing_method=licensing_method,
                add_ons=add_ons,
                renews=previous,
                auto_renew=not trial and rng.random() < 0.85,
                quarterly_reconciliation=rng.random() < 0.8,
                contract_overages_allowed=rng.random() < 0.9,
                status=_status_for_term(start, end, self.today),
            )
            plans.append(sub_plan)
            previous = sub_plan
        return Lineage(customer=customer, deployment=deployment, plans=plans, profile=profile)

    def assign_stages(self) -> None:
        """Decide how far each order got. Fresh orders (not started yet, or started in the last
        week, with no earlier subscription) are spread over the in-progress stages, so that the
        demo always has stuck orders and two failed deliveries; other orders whose term has not
        started wait for it; everything else is complete."""
        fresh = {Deployment.SELF_MANAGED: [], Deployment.GITLAB_COM: []}
        for lineage in self.lineages:
            for plan in lineage.plans:
                if plan.status == SubscriptionStatus.PENDING:
                    # Licensed or linked ahead of the term; the rest waits for the start date.
                    plan.stage = (
                        "waiting_for_start"
                        if plan.deployment == Deployment.SELF_MANAGED
                        else "namespace_linked"
                    )
                if len(lineage.plans) == 1 and plan.status != SubscriptionStatus.EXPIRED:
                    fresh[lineage.deployment].append(plan)
        for deployment, stages in (
            (Deployment.SELF_MANAGED, SELF_MANAGED_FRESH_STAGES),
            (Deployment.GITLAB_COM, GITLAB_COM_FRESH_STAGES),
        ):
            # Newest first: pending starts, then the most recently started terms.
            candidates = sorted(
                fresh[deployment], key=lambda p: (-p.term_start.toordinal(), p.name)
            )
            for plan, stage in zip(candidates, stages, strict=False):
                plan.stage = stage

    def create_subscriptions(self) -> None:
        for lineage in self.lineages:
            for plan in lineage.plans:
                web = plan.channel == Channel.WEB_DIRECT
                plan.subscription = services.subscription_create(
                    # Web-store orders arrive without a person behind them: a system write.
                    actor=None if web else self.support,
                    customer=lineage.customer,
                    name=plan.name,
                    plan=plan.plan,
                    deployment=plan.deployment,
                    term_start=plan.term_start,
                    term_end=plan.term_end,
                    seats=plan.seats,
                    channel=plan.channel,
                    partner=lineage.customer.partner,
                    licensing_method=plan.licensing_method,
                    auto_renew=plan.auto_renew,
                    quarterly_reconciliation=plan.quarterly_reconciliation,
                    contract_overages_allowed=plan.contract_overages_allowed,
                    renews=plan.renews.subscription if plan.renews else None,
                    add_ons=plan.add_ons,
                    reason="Web store order" if web else DEMO_REASON,
                    ticket_url="" if web else self.ticket(),
                    today=self.today,
                )
                if plan.subscription.status != plan.status:
                    raise RuntimeError(f"{plan.name}: unexpected status {plan.subscription.status}")

    # -- Licenses --------------------------------------------------------------------------------

    def issue_licenses(self) -> None:
        """A license for every self-managed order that got past "license issued", oldest term
        first (an expired term's license as issued at its start, then marked expired by the
        expiry job), and an activation code for the online ones still running."""
        from licenses.services import (
            activation_code_generate,
            license_issue,
            licenses_mark_expired,
        )

        for plan in self.plans:
            if plan.deployment != Deployment.SELF_MANAGED or plan.stage == "awaiting_license":
                continue
            web = plan.channel == Channel.WEB_DIRECT
            expired = plan.status == SubscriptionStatus.EXPIRED
            self.licenses.append(
                license_issue(
                    actor=None if web else self.support,
                    subscription=plan.subscription,
                    reason="Web store order" if web else DEMO_REASON,
                    ticket_url="" if web else self.ticket(),
                    today=plan.term_start if expired else self.today,
                )
            )
            if plan.licensing_method == LicensingMethod.ONLINE_CLOUD and not expired:
                activation_code_generate(
                    actor=None if web else self.support,
                    subscription=plan.subscription,
                    reason="Web store order" if web else DEMO_REASON,
                )
                self.activation_codes += 1
        licenses_mark_expired(today=self.today)

    # -- Usage -----------------------------------------------------------------------------------

    def _reporting_days(self, lineage: Lineage) -> list[date]:
        """The window days on which this lineage's instance or namespace reported."""
        if lineage.plans[0].stage != "complete":
            return []
        started = [plan for plan in lineage.plans if plan.status != SubscriptionStatus.PENDING]
        if not started:
            return []
        first = lineage.plans[0].term_start + timedelta(days=self.rng.randint(1, 6))
        last = min(self.today, started[-1].term_end - timedelta(days=1))
        return [day for day in self.window if first <= day <= last]

    def _utilisation(self, profile: str) -> tuple[float, float]:
        uniform = self.rng.uniform
        if profile == "growth":
            return uniform(0.45, 0.7), uniform(0.8, 0.98)
        if profile == "overage":
            return uniform(0.85, 0.97), uniform(1.08, 1.3)
        if profile == "under":
            start = uniform(0.2, 0.45)
            return start, start * uniform(0.85, 1.05)
        level = uniform(0.7, 0.95)
        return level, level * uniform(0.97, 1.03)

    def create_usage(self) -> None:
        instances: list[tuple[Lineage, Instance]] = []
        namespaces: list[tuple[Lineage, Namespace]] = []
        for lineage in self.lineages:
            lineage.days = self._reporting_days(lineage)
            current = lineage.current
            if lineage.deployment == Deployment.SELF_MANAGED:
                if current.licensing_method == LicensingMethod.LEGACY or not lineage.days:
                    continue  # legacy licenses never report; new orders have not activated
                offline = current.licensing_method == LicensingMethod.OFFLINE_CLOUD
                instances.append((lineage, self._instance(lineage, offline=offline)))
            elif lineage.plans[0].stage != "awaiting_namespace":
                namespaces.append((lineage, self._namespace(lineage)))
        # ~8% of the syncing instances went quiet 3–40 days ago (proxy change, expired
        # certificate, a move): the "is it still syncing?" question account managers ask.
        syncing = [
            lineage
            for lineage, instance in instances
            if not instance.air_gapped and lineage.days and lineage.days[-1] == self.today
        ]
        for lineage in self.rng.sample(syncing, k=max(1, round(len(syncing) * 0.08))):
            lineage.stopped_on = self.today - timedelta(days=self.rng.randint(3, 40))
        Instance.objects.bulk_create([instance for _, instance in instances])
        Namespace.objects.bulk_create([namespace for _, namespace in namespaces])
        for lineage, instance in instances:
            lineage.reporter = instance
            self._instance_reports(lineage, instance)
        for lineage, namespace in namespaces:
            lineage.reporter = namespace
            self._namespace_reports(lineage, namespace)
        SeatReport.objects.bulk_create(self.reports, batch_size=2000)
        Instance.objects.bulk_update(
            [instance for _, instance in instances],
            ["first_seen_at", "last_seen_at", "last_sync_at"],
            batch_size=500,
        )
        Namespace.objects.bulk_update(
            [namespace for _, namespace in namespaces],
            [
                "seats_in_use",
                "max_seats_used",
                "max_seats_used_changed_at",
                "seats_owed",
                "last_refreshed_at",
            ],
            batch_size=500,
        )

    def _current_subscription(self, lineage: Lineage) -> Subscription:
        """The subscription in force today, else the latest one that has started."""
        for plan in reversed(lineage.plans):
            if plan.term_start <= self.today:
                return plan.subscription
        return lineage.plans[0].subscription

    def _instance(self, lineage: Lineage, *, offline: bool) -> Instance:
        domain = self.customer_domains[lineage.customer.pk]
        host = self.rng.choice(["gitlab", "git", "code", "scm", "gitlab-prod"])
        return Instance(
            instance_id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
            unique_instance_id=uuid.UUID(int=self.rng.getrandbits(128), version=4).hex,
            customer=lineage.customer,
            subscription=self._current_subscription(lineage),
            hostname=f"{host}.{domain}",
            version=self.rng.choice(GITLAB_VERSIONS),
            air_gapped=offline,
        )

    def _namespace(self, lineage: Lineage) -> Namespace:
        base = slugify(lineage.customer.name)[:40].strip("-") or "group"
        path, suffix = base, 2
        while path in self._paths:
            path, suffix = f"{base}-{suffix}", suffix + 1
        self._paths.add(path)
        namespace_id = self.rng.randint(5_000_000, 99_000_000)
        while namespace_id in self._namespace_ids:
            namespace_id = self.rng.randint(5_000_000, 99_000_000)
        self._namespace_ids.add(namespace_id)
        return Namespace(
            gitlab_namespace_id=namespace_id,
            full_path=path,
            name=lineage.customer.name,
            subscription=self._current_subscription(lineage),
        )

    def _daily_users(self, lineage: Lineage, days: list[date]):
        """(day, billable users, plan in force) along the lineage's usage profile."""
        start_u, end_u = self._utilisation(lineage.profile)
        # Relative to the latest seats: a renewal that added seats shows as overage before it.
        base = lineage.current.seats
        span = REPORT_DAYS - 1
        for day in days:
            plan = lineage.covering(day)
            if plan is None:
                continue
            level = start_u + (end_u - start_u) * (day - self.window[0]).days / span
            yield day, max(1, round(base * level * (1 + self.rng.gauss(0, 0.012)))), plan

    def _add_on_metrics(self, plan: SubscriptionPlan, users: int) -> list[dict]:
        return [
            {
                "add_on_type": ADD_ON_METRIC_TYPES[spec.kind],
                "purchased_seats": spec.quantity,
                "assigned_seats": min(spec.quantity, round(users * 0.3)),
            }
            for spec in plan.add_ons
            if spec.kind in ADD_ON_METRIC_TYPES
        ]

    def _received_at(self, day: date, *, hour_from: int = 3, hours: int = 2) -> datetime:
        moment = datetime.combine(day, time(hour_from), tzinfo=UTC) + timedelta(
            minutes=self.rng.randint(0, hours * 60 - 1), seconds=self.rng.randint(0, 59)
        )
        return min(moment, self.now - timedelta(minutes=1))

    def _instance_reports(self, lineage: Lineage, instance: Instance) -> None:
        days = [d for d in lineage.days if not lineage.stopped_on or d < lineage.stopped_on]
        offline = instance.air_gapped
        if offline and days:
            # Air-gapped customers email license_usage.csv about once a month.
            monthly, due = [], days[0]
            for day in days:
                if day >= due:
                    monthly.append(day)
                    due = day + timedelta(days=self.rng.randint(27, 34))
            days = monthly
        peaks: dict[str, int] = {}
        received = None
        for day, users, plan in self._daily_users(lineage, days):
            peak = peaks[plan.name] = max(peaks.get(plan.name, 0), users)
            if offline:
                received = self._received_at(
                    day + timedelta(days=self.rng.randint(2, 6)), hour_from=8, hours=9
                )
                source = SeatReportSource.USAGE_FILE
                payload = {"file_name": "license_usage.csv", "imported_by": "support"}
            else:
                received = self._received_at(day)
                source = SeatReportSource.SEAT_LINK
                payload = {
                    "date": day.isoformat(),
                    "timestamp": received.isoformat(),
                    "gitlab_version": instance.version,
                    "hostname": instance.hostname,
                    "instance_id": str(instance.instance_id),
                    "billable_users_count": users,
                    "max_historical_user_count": peak,
                }
            self.reports.append(
                SeatReport(
                    subscription=plan.subscription,
                    instance=instance,
                    report_date=day,
                    billable_users=users,
                    max_historical_users=peak,
                    add_on_metrics=self._add_on_metrics(plan, users),
                    source=source,
                    raw_payload=payload,
                    received_at=received,
                )
            )
            instance.first_seen_at = min(instance.first_seen_at, received)
        if received is not None:
            instance.last_seen_at = received
            instance.last_sync_at = None if offline else received

    def _namespace_reports(self, lineage: Lineage, namespace: Namespace) -> None:
        current_name = next(
            plan.name for plan in lineage.plans if plan.subscription.pk == namespace.subscription_id
        )
        peaks: dict[str, int] = {}
        peak_at, users, received = None, 0, None
        for day, users, plan in self._daily_users(lineage, lineage.days):  # noqa: B007
            received = self._received_at(day, hour_from=0, hours=24)
            previous_peak = peaks.get(plan.name, 0)
            peaks[plan.name] = max(previous_peak, users)
            if plan.name == current_name and users > previous_peak:
                peak_at = received
            self.reports.append(
                SeatReport(
                    subscription=plan.subscription,
                    namespace=namespace,
                    report_date=day,
                    billable_users=users,
                    max_historical_users=peaks[plan.name],
                    add_on_metrics=self._add_on_metrics(plan, users),
                    source=SeatReportSource.SAAS,
                    raw_payload={
                        "namespace_id": namespace.gitlab_namespace_id,
                        "seats_in_use": users,
                        "max_seats_used": peaks[plan.name],
                    },
                    received_at=received,
                )
            )
        peak = peaks.get(current_name, 0)
        namespace.seats_in_use = users
        namespace.max_seats_used = peak
        namespace.max_seats_used_changed_at = peak_at
        namespace.seats_owed = max(0, peak - namespace.subscription.seats)
        namespace.last_refreshed_at = received

    # -- Provisioning records --------------------------------------------------------------------

    def _step(self, step, state, *, reason, actor_kind=None, error="") -> None:
        services.provisioning_step_set_state(
            actor=None, actor_kind=actor_kind, step=step, state=state, error=error, reason=reason
        )

    def advance_provisioning(self) -> None:
        """Walk every order as far as its stage says (system and instance writes)."""
        kind = ProvisioningStepKind
        reported = {report.subscription_id for report in self.reports}
        stuck_records = []
        for lineage in self.lineages:
            for plan in lineage.plans:
                record = plan.subscription.provisioning_records.get()
                steps = {step.kind: step for step in record.steps.all()}
                if plan.stage in STUCK_STAGES:
                    stuck_records.append(record)
                had_usage = plan.subscription.pk in reported or (
                    plan.status == SubscriptionStatus.EXPIRED and lineage.reporter is not None
                )
                if plan.deployment == Deployment.GITLAB_COM:
                    if plan.stage == "awaiting_namespace":
                        continue
                    self._step(
                        steps[kind.NAMESPACE_PROVISIONED],
                        StepState.DONE,
                        reason=f"Namespace {lineage.reporter.full_path} linked",
                    )
                    if had_usage:
                        self._step(
                            steps[kind.FIRST_USAGE],
                            StepState.DONE,
                            reason="First GitLab.com seat figures received",
                        )
                    continue
                if plan.stage == "awaiting_license":
                    continue
                # license_issue has already marked the "license issued" step.
                if plan.stage == "delivery_failed":
                    contact = lineage.customer.contacts.get(role=ContactRole.SOLD_TO)
                    self._step(
                        steps[kind.DELIVERED],
                        StepState.FAILED,
                        reason="License e-mail bounced",
                        error=f"550 5.1.1 <{contact.email}>: Recipient address rejected: "
                        "mailbox unavailable",
                    )
                    continue
                self._step(
                    steps[kind.DELIVERED],
                    StepState.DONE,
                    reason="License sent to the partner"
                    if plan.channel == Channel.PARTNER
                    else "License e-mailed to the sold-to contact",
                )
                if plan.stage in ("delivered", "waiting_for_start"):
                    continue
                if plan.licensing_method == LicensingMethod.LEGACY:
                    for step_kind in (kind.ACTIVATED, kind.FIRST_USAGE):
                        self._step(
                            steps[step_kind],
                            StepState.SKIPPED,
                            reason="Legacy license file: no activation or Seat Link",
                        )
                    continue
                online = plan.licensing_method == LicensingMethod.ONLINE_CLOUD
                self._step(
                    steps[kind.ACTIVATED],
                    StepState.DONE,
                    actor_kind=ActorKind.INSTANCE if online else None,
                    reason="Instance activated with its code"
                    if online
                    else "Offline license uploaded by the customer",
                )
                if had_usage:
                    self._step(
                        steps[kind.FIRST_USAGE],
                        StepState.DONE,
                        actor_kind=ActorKind.INSTANCE if online else None,
                        reason="First Seat Link received"
                        if online
                        else "First usage file imported",
                    )
        self._backdate_stuck(stuck_records)

    def _backdate_stuck(self, records) -> None:
        """Make the open steps of the stuck orders overdue.

        Seed-only: ``due_at`` is set at creation to now + SLA, and "stuck" means pending for
        longer than that, which an order created a moment ago cannot be. ``due_at`` is a
        scheduling field, not an audited domain field, so a queryset update is acceptable here
        and nowhere else.
        """
        for record in records:
            overdue = timedelta(hours=self.rng.randint(30, 9 * 24))
            ProvisioningStep.objects.filter(record=record, state=StepState.PENDING).update(
                due_at=self.now - overdue
            )

    # -- True-ups: seat changes with re-issued licenses --------------------------------------------

    def true_ups(self) -> None:
        """Some customers over their seats bought more: the seat change re-issues the license,
        which supersedes the previous one. GitLab.com subscriptions only change seats."""
        from licenses.selectors import license_current

        candidates = [
            lineage
            for lineage in self.lineages
            if lineage.profile in ("overage", "growth")
            and lineage.current.status == SubscriptionStatus.ACTIVE
            and lineage.current.stage == "complete"
            and lineage.current.plan not in TRIAL_PLANS
            and lineage.reporter is not None
        ]
        self_managed = [c for c in candidates if c.deployment == Deployment.SELF_MANAGED][:6]
        saas = [c for c in candidates if c.deployment == Deployment.GITLAB_COM][:3]
        for lineage in self_managed + saas:
            subscription = Subscription.objects.get(pk=lineage.current.subscription.pk)
            peak = selectors.subscription_peak_usage(subscription=subscription)
            new_seats = max(subscription.seats + 5, math.ceil(peak * 1.1 / 5) * 5)
            # As support does it: the agent files the fix; a rise of more than 20% waits for
            # the lead's approval (four-eyes), which the demo then gives.
            outcome = services.fix_submit(
                actor=self.support,
                action="seats_change",
                target_pk=subscription.pk,
                params={"seats": new_seats},
                reason_code=ReasonCode.ORDER_CORRECTION,
                reason="True-up: customer bought the seats in use plus headroom",
                ticket_url=self.ticket(),
            )
            if outcome.request is not None:
                services.fix_request_approve(
                    actor=self.lead,
                    fix_request=outcome.request,
                    note="Checked the true-up order in Salesforce",
                )
            subscription = Subscription.objects.get(pk=subscription.pk)
            lineage.current.seats = new_seats
            if subscription.is_self_managed:
                self.licenses.extend(license_current(subscription))

    def pending_approvals(self) -> None:
        """Two risky fixes an agent asked for today, waiting in the leads' approvals queue: a
        revoke (a key posted publicly) and a 45-day temporary extension."""
        from licenses.choices import LicenseKind, LicenseStatus

        file_licenses = [
            license
            for license in self.licenses
            if license.kind != LicenseKind.ONLINE_CLOUD
            and license.status in (LicenseStatus.ISSUED, LicenseStatus.ACTIVE)
            and not license.trial
        ]
        if not file_licenses:
            return
        revoked = file_licenses[0]
        services.fix_submit(
            actor=self.support,
            action="license_revoke",
            target_pk=revoked.pk,
            params={},
            reason_code=ReasonCode.SECURITY,
            reason="The customer posted this key in a public issue; they have a new one",
            ticket_url=self.ticket(),
        )
        extended = file_licenses[-1].subscription
        services.fix_submit(
            actor=self.support,
            action="license_extend",
            target_pk=extended.pk,
            params={"expires_on": (extended.term_end + timedelta(days=45)).isoformat()},
            reason_code=ReasonCode.LATE_RENEWAL,
            reason="Renewal PO is stuck in the customer's procurement; AE asks for 45 days",
            ticket_url=self.ticket(),
        )

    def support_tickets(self) -> None:
        """26 weeks of L&R tickets, as a help-desk CSV export imported with the real import
        service, so /indicators/ has its third series: 35-70 tickets a week, about 40 % of
        them about provisioning (a license not received, an activation code, a namespace
        link), a slowly falling share as the fixes take over."""
        import csv
        import io

        from provision.services import support_tickets_import

        provisioning = [
            ("lnr_sm_did_not_receive", "Self-Managed License Related", "License key not received"),
            ("lnr_saas_link_sub", "SaaS Subscription Related", "Link subscription to our group"),
            ("lnr_sm_license_errors", "Legacy license troubleshooting", "Users over license"),
            ("", "Cloud licensing", "Activation code says invalid"),
            ("lnr_trial_cannot_apply", "Self-Managed Trial Related", "Cannot apply trial"),
        ]
        other = [
            ("lnr_billing", "Billing", "Invoice address change"),
            ("lnr_refund", "Billing", "Refund for unused seats"),
            ("lnr_account", "CustomersDot account", "Cannot log in to the customers portal"),
            ("lnr_quote", "Sales", "Quote for 50 more seats"),
        ]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["Ticket ID", "Created at", "Tags", "L&R - Category", "Subject"])
        ticket_id = 480_000
        start = self.now - timedelta(weeks=26)
        for week in range(26):
            share = 0.48 - 0.006 * week  # the provisioning share falls slowly
            for _ in range(self.rng.randint(35, 70)):
                ticket_id += 1
                created = start + timedelta(
                    weeks=week, seconds=self.rng.randint(0, 7 * 24 * 3600 - 1)
                )
                tag, category, subject = self.rng.choice(
                    provisioning if self.rng.random() < share else other
                )
                writer.writerow(
                    [
                        ticket_id,
                        created.strftime("%Y-%m-%d %H:%M:%S"),
                        " ".join(t for t in (tag, "lnr") if t),
                        category,
                        subject,
                    ]
                )
        support_tickets_import(
            actor=None,
            file_name="zendesk-lnr-export.csv",
            content=out.getvalue().encode(),
            reason="Demo: the L&R view exported from the help desk",
        )

    # -- Rollups ---------------------------------------------------------------------------------

    def create_rollups(self) -> None:
        """One row per subscription and day with reports, as the nightly rollup computes it:
        seats in force that day (from the seat ledger), billable summed over reporters, the
        highest max-historical count, overage and utilisation."""
        history: dict[int, list[tuple[date, int]]] = defaultdict(list)
        ledger = SeatLedgerEntry.objects.filter(subscription__customer__in=self.customers)
        for entry in ledger.order_by("effective_at", "id"):
            history[entry.subscription_id].append(
                (timezone.localdate(entry.effective_at), entry.seats)
            )

        def seats_on(subscription_id: int, day: date) -> int:
            entries = history[subscription_id]
            seats = entries[0][1]
            for effective, value in entries:
                if effective <= day:
                    seats = value
            return seats

        totals: dict[tuple[int, date], tuple[int, int]] = {}
        for report in self.reports:
            key = (report.subscription_id, report.report_date)
            billable, peak = totals.get(key, (0, 0))
            totals[key] = (billable + report.billable_users, max(peak, report.max_historical_users))
        rows = []
        for (subscription_id, day), (billable, peak) in sorted(totals.items()):
            seats = seats_on(subscription_id, day)
            utilisation = Decimal(billable) / Decimal(seats) if seats else Decimal(0)
            computed_at = datetime.combine(day + timedelta(days=1), time(6), tzinfo=UTC)
            rows.append(
                SubscriptionUsageDaily(
                    subscription_id=subscription_id,
                    date=day,
                    seats=seats,
                    billable_users=billable,
                    max_users=peak,
                    overage=max(0, peak - seats),
                    utilization=utilisation.quantize(Decimal("0.0001")),
                    computed_at=min(computed_at, self.now),
                )
            )
        SubscriptionUsageDaily.objects.bulk_create(rows, batch_size=2000)
        self.rollup_count = len(rows)

    # -- Notes -----------------------------------------------------------------------------------

    def add_notes(self) -> int:
        authors = [self.support, self.lead, *self.account_managers]
        count = 0
        for customer in self.rng.sample(self.customers, k=30):
            technical = customer.contacts.filter(role=ContactRole.TECHNICAL).first()
            contact = technical.full_name if technical else "the customer's admin"
            for _ in range(self.rng.randint(1, 2)):
                body = self.rng.choice(NOTE_TEMPLATES).format(
                    plan="Premium",
                    contact=contact,
                    date=(self.today + timedelta(days=self.rng.randint(10, 80))).strftime("%d %b"),
                    seats=self.rng.choice([20, 50, 100, 200]),
                )
                # Account managers write about their own book; support writes about anyone.
                author = customer.account_owner
                if author is None or self.rng.random() < 0.6:
                    author = self.rng.choice(authors)
                services.note_add(actor=author, customer=customer, body=body)
                count += 1
        return count
