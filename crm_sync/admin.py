from django.contrib import admin

from crm_sync.models import CrmRecordState, SyncRowError, SyncRun
from provision.admin_base import ReadOnlyAdmin

for model in (CrmRecordState, SyncRun, SyncRowError):
    admin.site.register(model, ReadOnlyAdmin)
