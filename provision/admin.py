from django.contrib import admin

from provision.admin_base import ReadOnlyAdmin
from provision.models import (
    AuditEvent,
    Contact,
    Customer,
    Note,
    Partner,
    ProvisioningRecord,
    ProvisioningStep,
    SeatLedgerEntry,
    Subscription,
    SubscriptionAddOn,
)

admin.site.site_header = "Provision administration"


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    list_display = ["name", "billing_account_number", "salesforce_account_id", "account_owner"]
    search_fields = ["name", "billing_account_number", "salesforce_account_id"]
    list_select_related = ["account_owner"]


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["name", "customer", "plan", "deployment", "status", "seats", "term_end"]
    list_filter = ["plan", "deployment", "status", "licensing_method"]
    search_fields = ["name", "customer__name"]
    list_select_related = ["customer"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_text", "actor_kind", "action", "target_text", "source"]
    list_filter = ["actor_kind", "source", "action"]
    search_fields = ["target_text", "reason", "request_id", "actor_text"]
    date_hierarchy = "created_at"


for model in (
    Contact,
    Partner,
    SubscriptionAddOn,
    SeatLedgerEntry,
    ProvisioningRecord,
    ProvisioningStep,
    Note,
):
    admin.site.register(model, ReadOnlyAdmin)
