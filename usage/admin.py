from django.contrib import admin

from provision.admin_base import ReadOnlyAdmin
from usage.models import Instance, Namespace, SeatReport, SubscriptionUsageDaily, UsageFileImport

for model in (Instance, Namespace, SeatReport, SubscriptionUsageDaily, UsageFileImport):
    admin.site.register(model, ReadOnlyAdmin)
