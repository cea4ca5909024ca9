from django.apps import AppConfig


class QuotasConfig(AppConfig):
    """Team quotas: policies, the reconciler, GPU-hour usage, budgets and the team pages.

    Teams and memberships (portal/teams) are what jobs build on; quotas read jobs, so they sit
    above both. Jobs reach them through portal/jobs/quota.py, answered here at start-up."""

    name = "portal.quotas"
    label = "quotas"

    def ready(self) -> None:
        from portal.jobs import quota  # noqa: PLC0415
        from portal.quotas import limits  # noqa: PLC0415
        quota.register(submit_check=limits.check_submit, wait_words=limits.team_wait_words)
