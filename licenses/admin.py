from django.contrib import admin

from licenses.models import Activation, ActivationCode, License, LicenseDelivery, SigningKey
from provision.admin_base import ReadOnlyAdmin


@admin.register(License)
class LicenseAdmin(ReadOnlyAdmin):
    list_display = ["id", "subscription", "kind", "status", "user_count", "expires_on"]
    list_filter = ["kind", "status"]
    search_fields = ["subscription__name", "key_sha256", "licensee_email"]
    exclude = ["key"]
    list_select_related = ["subscription"]


for model in (ActivationCode, Activation, LicenseDelivery, SigningKey):
    admin.site.register(model, ReadOnlyAdmin)
