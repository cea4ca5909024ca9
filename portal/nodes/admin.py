from django.contrib import admin

from portal.nodes.models import Finding, HealthReport, Node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "state", "flags", "gpus", "reason", "last_seen", "last_health_at", "last_health_ok"]
    list_filter = ["state", "last_health_ok"]
    search_fields = ["name", "reason"]


class FindingInline(admin.TabularInline):
    model = Finding
    fields = ["check_name", "severity", "action", "gpu", "xid", "detail"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(HealthReport)
class HealthReportAdmin(admin.ModelAdmin):
    """Read-only: reports are evidence of what a node said, signed by it."""

    list_display = ["node", "source", "sent_at", "received_at", "job_id", "clean", "late"]
    list_filter = ["source", "clean", "late"]
    search_fields = ["node__name"]
    list_select_related = ["node"]
    inlines = [FindingInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
