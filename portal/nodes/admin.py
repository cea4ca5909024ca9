from django.contrib import admin

from portal.nodes.models import Node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "state", "flags", "gpus", "reason", "last_seen"]
    list_filter = ["state"]
    search_fields = ["name", "reason"]
