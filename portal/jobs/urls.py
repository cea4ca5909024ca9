"""Web pages for jobs (list, detail, submit, controls, output, templates)."""

from django.urls import path

from portal.jobs import views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("rows/", views.job_list_rows, name="rows"),
    path("new/", views.job_submit, name="new"),
    path("templates/", views.template_list, name="templates"),
    path("templates/new/", views.template_new, name="template_new"),
    path("templates/<int:template_id>/edit/", views.template_edit, name="template_edit"),
    path("templates/<int:template_id>/delete/", views.template_delete, name="template_delete"),
    path("<int:job_id>/", views.job_detail, name="detail"),
    path("<int:job_id>/status/", views.job_status, name="status"),
    path("<int:job_id>/output/", views.job_output, name="output"),
    path("<int:job_id>/output/download/", views.job_output_download, name="output_download"),
    # cancel | hold | release | requeue (POST); anything else is a 404
    path("<int:job_id>/<slug:action>/", views.job_control, name="control"),
]
