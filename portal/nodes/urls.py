"""Web pages for nodes (list, detail, live partials, drain and resume)."""

from django.urls import path

from portal.nodes import views

app_name = "nodes"
urlpatterns = [
    path("", views.node_list, name="list"),
    path("rows/", views.node_list_rows, name="rows"),
    # <str:name> rather than a stricter converter: the view validates and answers 404 itself.
    path("<str:name>/", views.node_detail, name="detail"),
    path("<str:name>/status/", views.node_status, name="status"),
    path("<str:name>/drain/", views.node_drain, name="drain"),
    path("<str:name>/resume/", views.node_resume, name="resume"),
]
