from django.contrib import admin

from portal.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["slurm_job_id", "name", "owner", "team", "state", "partition", "submit_time"]
    list_filter = ["state", "team", "partition"]
    search_fields = ["name", "slurm_job_id", "owner__username", "uuid"]
    readonly_fields = ["uuid", "created_at", "updated_at"]
    # A million jobs: never count them all or load every owner for a dropdown.
    show_full_result_count = False
    raw_id_fields = ["owner", "team"]
