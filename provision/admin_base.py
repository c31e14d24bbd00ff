from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Domain data is changed through services (audited), never by raw admin edits."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
