from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "portal.teams"
    label = "teams"

    def ready(self) -> None:
        from portal.teams import signals  # noqa: F401, PLC0415  (connects the receivers)
