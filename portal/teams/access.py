"""Who counts as an admin: here, below the apps that check it (jobs, nodes, teams), so none of
them imports another for it."""

from __future__ import annotations


def is_admin(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)
