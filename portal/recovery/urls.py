"""Web pages of the recovery app: email settings, goodput and ETTR."""

from django.urls import path

from portal.recovery import views

app_name = "recovery"
urlpatterns = [
    path("settings/notifications/", views.notification_settings, name="notifications"),
    path("reliability/", views.reliability_page, name="reliability"),
]
