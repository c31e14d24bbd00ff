from django import forms
from django.contrib.auth import get_user_model

from provision.choices import Role
from provision.models import Customer, Partner


class ReasonFormMixin(forms.Form):
    """Every fix carries a reason and, usually, the ticket that asked for it."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Kept in the audit trail. Say why, not what.",
        max_length=2000,
    )
    ticket_url = forms.URLField(
        required=False, label="Ticket link", assume_scheme="https", max_length=500
    )


def _staff_users(role: str):
    return get_user_model().objects.filter(groups__name=role, is_active=True).order_by("username")


class CustomerEditForm(ReasonFormMixin, forms.Form):
    name = forms.CharField(max_length=200)
    email_domains = forms.CharField(
        required=False, help_text="Comma-separated, e.g. example.com, example.org"
    )
    salesforce_account_id = forms.CharField(required=False, max_length=18, label="Salesforce id")
    gainsight_company_id = forms.CharField(required=False, max_length=64, label="Gainsight id")
    account_owner = forms.ModelChoiceField(queryset=None, required=False)
    csm = forms.ModelChoiceField(queryset=None, required=False, label="CSM")
    partner = forms.ModelChoiceField(queryset=Partner.objects.all(), required=False)
    country = forms.CharField(required=False, max_length=2)

    field_order = [
        "name",
        "email_domains",
        "salesforce_account_id",
        "gainsight_company_id",
        "account_owner",
        "csm",
        "partner",
        "country",
        "reason",
        "ticket_url",
    ]

    def __init__(self, *args, customer: Customer, **kwargs):
        initial = {
            "name": customer.name,
            "email_domains": ", ".join(customer.email_domains or []),
            "salesforce_account_id": customer.salesforce_account_id or "",
            "gainsight_company_id": customer.gainsight_company_id or "",
            "account_owner": customer.account_owner_id,
            "csm": customer.csm_id,
            "partner": customer.partner_id,
            "country": customer.country,
        }
        super().__init__(*args, initial=initial, **kwargs)
        self.fields["account_owner"].queryset = _staff_users(Role.ACCOUNT_MANAGER)
        self.fields["csm"].queryset = _staff_users(Role.ACCOUNT_MANAGER)

    def changes(self) -> dict:
        data = {k: self.cleaned_data[k] for k in self.fields if k not in ("reason", "ticket_url")}
        data["email_domains"] = [d.strip() for d in data["email_domains"].split(",") if d.strip()]
        data["country"] = (data["country"] or "").upper()
        return data


class NoteForm(forms.Form):
    body = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), max_length=10_000, label="Note"
    )


class FixDecisionForm(forms.Form):
    """A lead's note when approving or rejecting a four-eyes request (or the requester's, when
    withdrawing it)."""

    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        label="Note",
        help_text="Kept with the decision. Required to reject or withdraw.",
    )
