"""Typed errors of the Slurm gateway. Views and tasks map these in one place."""


class SlurmError(Exception):
    """Base class. `retryable` tells tasks whether a later attempt may succeed."""

    retryable = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SlurmUnavailable(SlurmError):
    """Slurm could not be reached or did not answer in time. Retry later."""

    retryable = True


class SlurmUnreached(SlurmUnavailable):
    """The request never left: the connection was refused, so Slurm surely did not get it."""


class SlurmRejected(SlurmError):
    """Slurm refused the request; `message` is Slurm's own words, fit to show the user."""


class SlurmNotFound(SlurmError):
    """The job, node, partition or account does not exist in Slurm."""


class TokenRefused(SlurmError):
    """The gateway will not act as this account (root, SlurmUser, system or unknown users)."""
