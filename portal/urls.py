from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path

from portal import metrics as portal_metrics
from portal.api.main import api
from portal.core import views as core_views

urlpatterns = [
    path("", core_views.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    # Pages that do not link our icon (Django's admin) make browsers ask for /favicon.ico.
    path("favicon.ico", lambda request: redirect(static("portal/favicon.svg"), permanent=True)),
    path("metrics", portal_metrics.metrics, name="metrics"),
    path("accounts/login/", core_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("jobs/", include("portal.jobs.urls")),
    path("nodes/", include("portal.nodes.urls")),
    path("tokens/", include("portal.api.web_urls")),
    path("teams/", include("portal.quotas.urls")),
    path("", include("portal.recovery.urls")),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]

# An outage raised outside any view (e.g. while saving the session) is a 503, not a 500.
handler500 = "portal.infra.errors.server_error"
