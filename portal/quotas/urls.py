"""Web pages for teams: each team's own page, and the admins' list and policy form."""

from django.urls import path

from portal.quotas import views

app_name = "teams"
urlpatterns = [
    path("", views.team_list, name="list"),
    path("<str:name>/", views.team_page, name="detail"),
    path("<str:name>/live/", views.team_live, name="live"),
    path("<str:name>/policy/", views.team_policy_page, name="policy"),
]
