"""Forms for the license pages. Each fix carries a reason and, usually, a ticket link."""

from django import forms

from licenses.choices import LicenseKind
from provision.forms import ReasonFormMixin

# A pasted license key is a few kilobytes; anything far bigger is not one.
TROUBLESHOOT_MAX_CHARS = 20_000


class LicenseIssueForm(ReasonFormMixin, forms.Form):
    kind = forms.ChoiceField(
        choices=LicenseKind.choices,
        help_text="Defaults to the subscription's licensing method.",
    )
    field_order = ["kind", "reason", "ticket_url"]


class DownloadForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000)
    ticket_url = forms.URLField(required=False, assume_scheme="https", max_length=500)


class TroubleshootForm(forms.Form):
    text = forms.CharField(
        label="License key, activation code or instance id",
        max_length=TROUBLESHOOT_MAX_CHARS,
        strip=True,
        widget=forms.Textarea(
            attrs={
                "rows": 8,
                "spellcheck": "false",
                "autocomplete": "off",
                "autocapitalize": "off",
                "class": "font-monospace",
                "placeholder": (
                    "Paste a license key (the whole .gitlab-license file), an activation code "
                    "(24 letters and digits) or an instance id (UUID)…"
                ),
            }
        ),
    )
