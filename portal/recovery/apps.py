from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    name = "portal.recovery"
    label = "recovery"
    verbose_name = "Job recovery"

    def ready(self) -> None:
        # Receivers import models, which must wait until the app registry is ready.
        from portal.nodes import evacuation  # noqa: PLC0415
        from portal.recovery import signals  # noqa: F401, PLC0415
        from portal.recovery.services import evacuate_node  # noqa: PLC0415

        # The node policy moves jobs through this (portal.nodes may not import this app).
        evacuation.register(evacuate_node)
