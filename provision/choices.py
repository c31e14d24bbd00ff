from django.db import models


class Role(models.TextChoices):
    """Roles; each is a Django group of the same name (created by data migrations).

    ``integration`` is not a staff role: it marks machine accounts (GitLab.com pushing seat
    figures) that authenticate with an API token and may call machine endpoints only.
    """

    SUPPORT = "support", "Support"
    SUPPORT_LEAD = "support_lead", "Support lead"
    ACCOUNT_MANAGER = "account_manager", "Account manager"
    ADMIN = "admin", "Admin"
    INTEGRATION = "integration", "Integration (machine account)"


class Plan(models.TextChoices):
    PREMIUM = "premium", "Premium"
    ULTIMATE = "ultimate", "Ultimate"
    PREMIUM_TRIAL = "premium_trial", "Premium trial"
    ULTIMATE_TRIAL = "ultimate_trial", "Ultimate trial"


TRIAL_PLANS = frozenset({Plan.PREMIUM_TRIAL, Plan.ULTIMATE_TRIAL})


class Deployment(models.TextChoices):
    SELF_MANAGED = "self_managed", "Self-managed"
    GITLAB_COM = "gitlab_com", "GitLab.com"


class SubscriptionStatus(models.TextChoices):
    PENDING = "pending", "Pending start"
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class Channel(models.TextChoices):
    WEB_DIRECT = "web_direct", "Web direct"
    SALES_ASSISTED = "sales_assisted", "Sales assisted"
    PARTNER = "partner", "Partner"


class LicensingMethod(models.TextChoices):
    """The subscription's "Turn On Cloud Licensing" flag: Yes / Offline / No."""

    ONLINE_CLOUD = "online_cloud", "Cloud (online)"
    OFFLINE_CLOUD = "offline_cloud", "Offline cloud"
    LEGACY = "legacy", "Legacy license file"


class AddOnKind(models.TextChoices):
    DUO_PRO = "duo_pro", "GitLab Duo Pro"
    DUO_ENTERPRISE = "duo_enterprise", "GitLab Duo Enterprise"
    COMPUTE_MINUTES = "compute_minutes", "Compute minutes"
    STORAGE = "storage", "Storage (MiB)"


class ContactRole(models.TextChoices):
    SOLD_TO = "sold_to", "Sold to"
    BILL_TO = "bill_to", "Bill to"
    TECHNICAL = "technical", "Technical"


class PartnerKind(models.TextChoices):
    RESELLER = "reseller", "Reseller"
    DISTRIBUTOR = "distributor", "Distributor"


class OrderKind(models.TextChoices):
    NEW = "new", "New subscription"
    RENEWAL = "renewal", "Renewal"
    AMENDMENT = "amendment", "Amendment"


class ProvisioningStepKind(models.TextChoices):
    """The steps of an order, in the order they normally complete."""

    SUBSCRIPTION_CREATED = "subscription_created", "Subscription created"
    LICENSE_ISSUED = "license_issued", "License issued"
    DELIVERED = "delivered", "Delivered"
    ACTIVATED = "activated", "Activated"
    NAMESPACE_PROVISIONED = "namespace_provisioned", "Namespace provisioned"
    FIRST_USAGE = "first_usage", "First usage received"


SELF_MANAGED_STEPS = (
    ProvisioningStepKind.SUBSCRIPTION_CREATED,
    ProvisioningStepKind.LICENSE_ISSUED,
    ProvisioningStepKind.DELIVERED,
    ProvisioningStepKind.ACTIVATED,
    ProvisioningStepKind.FIRST_USAGE,
)
GITLAB_COM_STEPS = (
    ProvisioningStepKind.SUBSCRIPTION_CREATED,
    ProvisioningStepKind.NAMESPACE_PROVISIONED,
    ProvisioningStepKind.FIRST_USAGE,
)


class StepState(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class ActorKind(models.TextChoices):
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System"
    INSTANCE = "instance", "GitLab instance"
    CRM = "crm", "CRM"


class AuditSource(models.TextChoices):
    UI = "ui", "Staff console"
    API = "api", "API"
    ADMIN = "admin", "Django admin"
    TASK = "task", "Background task"
    COMMAND = "command", "Management command"
    SHELL = "shell", "Shell"


class ReasonCode(models.TextChoices):
    """Why a support fix was made: a fixed list for reporting, with free text beside it.

    Modelled on the L&R ticket categories (support-workflows §3) and on Kill Bill's reason codes.
    """

    CUSTOMER_REQUEST = "customer_request", "Customer request"
    INTERNAL_REQUEST = "internal_request", "Internal request (AE / CSM)"
    ORDER_CORRECTION = "order_correction", "Order or quote correction"
    PROVISIONING_FAILURE = "provisioning_failure", "Provisioning failure"
    DELIVERY_PROBLEM = "delivery_problem", "License or code not received"
    ACTIVATION_PROBLEM = "activation_problem", "Activation or sync problem"
    LATE_RENEWAL = "late_renewal", "Late renewal (temporary extension)"
    TRUE_UP_WAIVER = "true_up_waiver", "Approved true-up waiver"
    OWNERSHIP_CHANGE = "ownership_change", "Ownership or contact change"
    CLOUD_LICENSING_TRANSITION = "cloud_transition", "Transition to cloud licensing"
    SECURITY = "security", "Security or abuse"
    DATA_CORRECTION = "data_correction", "Data correction (our error)"


class FixRequestState(models.TextChoices):
    """A four-eyes fix request: asked, then approved (and run) or rejected or withdrawn."""

    PENDING = "pending", "Waiting for approval"
    DONE = "done", "Approved and done"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
