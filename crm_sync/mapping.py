"""Which Provision figure goes to which CRM field: the default mapping and how settings change it.

A payload (``crm_sync.selectors.crm_payloads``) is target-neutral: per customer an ``account``
dict and one ``subscriptions`` dict per current subscription, with the logical names below. A
target's mapping says which object each record goes to, which field is its external id, and the
API name of every logical field sent. A logical field left out of a mapping is not sent.

``settings.CRM_FIELD_MAPPING`` (environment ``CRM_FIELD_MAPPING``, JSON) is merged over the
defaults per target and record kind, so an admin renames a field or drops one without a code
change, e.g. ``{"salesforce": {"account": {"fields": {"seats_owed": "Overage__c"}}}}``; a field
mapped to ``null`` is not sent. docs/crm.md lists the defaults.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import MappingProxyType

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from crm_sync.choices import CrmTarget

# The logical fields of each record kind, in the order docs/crm.md lists them.
ACCOUNT_FIELDS = (
    "customer_key",  # billing account number: the external id
    "name",
    "plan",
    "subscription_count",
    "seats",
    "billable_users",
    "max_users",
    "seats_owed",
    "utilization_pct",
    "last_usage_sync",
    "license_status",
    "renewal_date",
    "console_url",
)
SUBSCRIPTION_FIELDS = (
    "subscription_key",  # subscription name: the external id
    "customer_key",
    "name",
    "plan",
    "term_start",
    "term_end",
    "usage_date",
    "seats",
    "billable_users",
    "max_users",
    "seats_owed",
    "utilization_pct",
    "last_usage_sync",
    "license_status",
)
RECORD_KINDS = {"account": ACCOUNT_FIELDS, "subscription": SUBSCRIPTION_FIELDS}
KEY_FIELDS = {"account": "customer_key", "subscription": "subscription_key"}

DEFAULT_CRM_MAPPING = {
    CrmTarget.SALESFORCE.value: {
        "account": {
            "object": "Account",
            "fields": {
                "customer_key": "Provision_Customer_Id__c",
                "name": "Name",
                "plan": "Provision_Plan__c",
                "subscription_count": "Provision_Subscription_Count__c",
                "seats": "Provision_Seats_Purchased__c",
                "billable_users": "Provision_Billable_Users__c",
                "max_users": "Provision_Max_Users__c",
                "seats_owed": "Provision_Overage_Seats__c",
                "utilization_pct": "Provision_Utilization_Pct__c",
                "last_usage_sync": "Provision_Last_Usage_Sync__c",
                "license_status": "Provision_License_Status__c",
                "renewal_date": "Provision_Renewal_Date__c",
                "console_url": "Provision_Console_Url__c",
            },
        },
        "subscription": {
            "object": "Provision_Subscription_Usage__c",
            "fields": {
                "subscription_key": "Provision_Subscription_Id__c",
                "customer_key": "Provision_Customer_Id__c",
                "name": "Name",
                "plan": "Provision_Plan__c",
                "term_start": "Provision_Start_Date__c",
                "term_end": "Provision_End_Date__c",
                "usage_date": "Provision_Usage_Date__c",
                "seats": "Provision_Seats_Purchased__c",
                "billable_users": "Provision_Billable_Users__c",
                "max_users": "Provision_Max_Users__c",
                "seats_owed": "Provision_Overage_Seats__c",
                "utilization_pct": "Provision_Utilization_Pct__c",
                "last_usage_sync": "Provision_Last_Usage_Sync__c",
                "license_status": "Provision_License_Status__c",
            },
        },
    },
    CrmTarget.GAINSIGHT.value: {
        "account": {
            "object": "Company",
            "fields": {
                "customer_key": "Provision_Customer_Id__gc",
                "name": "Name",
                "plan": "Provision_Plan__gc",
                "subscription_count": "Provision_Subscription_Count__gc",
                "seats": "Provision_Seats_Purchased__gc",
                "billable_users": "Provision_Billable_Users__gc",
                "max_users": "Provision_Max_Users__gc",
                "seats_owed": "Provision_Overage_Seats__gc",
                "utilization_pct": "Provision_Utilization_Pct__gc",
                "last_usage_sync": "Provision_Last_Usage_Sync__gc",
                "license_status": "Provision_License_Status__gc",
                "renewal_date": "Provision_Renewal_Date__gc",
                "console_url": "Provision_Console_Url__gc",
            },
        },
        "subscription": {
            "object": "Provision_Subscription_Usage__gc",
            "fields": {
                "subscription_key": "Provision_Subscription_Id__gc",
                "customer_key": "Provision_Customer_Id__gc",
                "name": "Name",
                "plan": "Provision_Plan__gc",
                "term_start": "Provision_Start_Date__gc",
                "term_end": "Provision_End_Date__gc",
                "usage_date": "Provision_Usage_Date__gc",
                "seats": "Provision_Seats_Purchased__gc",
                "billable_users": "Provision_Billable_Users__gc",
                "max_users": "Provision_Max_Users__gc",
                "seats_owed": "Provision_Overage_Seats__gc",
                "utilization_pct": "Provision_Utilization_Pct__gc",
                "last_usage_sync": "Provision_Last_Usage_Sync__gc",
                "license_status": "Provision_License_Status__gc",
            },
        },
    },
}


@dataclass(frozen=True)
class RecordMapping:
    """Where one record kind goes in one target: object, external id field, field names."""

    object_name: str
    external_id_field: str
    fields: MappingProxyType  # logical name -> target API name (only the fields sent)

    def target_fields(self, values: dict) -> dict:
        """The target's field names and values for one record (the key included)."""
        return {api_name: values.get(logical) for logical, api_name in self.fields.items()}


@dataclass(frozen=True)
class TargetMapping:
    """A target's mapping for accounts and subscriptions."""

    target: str
    account: RecordMapping
    subscription: RecordMapping


def _merged(target: str) -> dict:
    mapping = copy.deepcopy(DEFAULT_CRM_MAPPING[target])
    overrides = getattr(settings, "CRM_FIELD_MAPPING", {}) or {}
    if not isinstance(overrides, dict):
        raise ImproperlyConfigured("CRM_FIELD_MAPPING must be a JSON object")
    for kind, override in (overrides.get(target) or {}).items():
        if kind not in RECORD_KINDS:
            raise ImproperlyConfigured(
                f"CRM_FIELD_MAPPING[{target!r}] has {kind!r}: expected 'account' or 'subscription'"
            )
        if not isinstance(override, dict):
            raise ImproperlyConfigured(f"CRM_FIELD_MAPPING[{target!r}][{kind!r}] must be an object")
        if "object" in override:
            mapping[kind]["object"] = override["object"]
        for logical, api_name in (override.get("fields") or {}).items():
            if logical not in RECORD_KINDS[kind]:
                raise ImproperlyConfigured(
                    f"CRM_FIELD_MAPPING[{target!r}][{kind!r}] maps unknown field {logical!r}; "
                    f"known: {', '.join(RECORD_KINDS[kind])}"
                )
            if api_name is None:
                mapping[kind]["fields"].pop(logical, None)
            else:
                mapping[kind]["fields"][logical] = str(api_name)
    return mapping


def target_mapping(target: str) -> TargetMapping:
    """The mapping in force for ``target``: the defaults with ``CRM_FIELD_MAPPING`` merged in."""
    merged = _merged(target)
    records = {}
    for kind in RECORD_KINDS:
        fields = merged[kind]["fields"]
        key = KEY_FIELDS[kind]
        if key not in fields:
            raise ImproperlyConfigured(
                f"CRM_FIELD_MAPPING[{target!r}][{kind!r}] cannot drop {key!r}: it is the "
                "external id records are upserted by"
            )
        records[kind] = RecordMapping(
            object_name=merged[kind]["object"],
            external_id_field=fields[key],
            fields=MappingProxyType(dict(fields)),
        )
    return TargetMapping(target=target, **records)
