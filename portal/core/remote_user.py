"""REMOTE_USER login for sites behind SSO; the header name comes from settings."""

from django.conf import settings
from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.middleware import PersistentRemoteUserMiddleware


class RemoteUserMiddleware(PersistentRemoteUserMiddleware):
    """Trust the web server's authenticated user. Persistent: the session survives pages
    (such as the API's) that the SSO layer does not protect."""

    @property
    def header(self) -> str:
        return settings.REMOTE_USER_HEADER


class SsoBackend(RemoteUserBackend):
    """Creates users on their first SSO visit, with no local password to guess."""

    def configure_user(self, request, user, created=True):
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        return user
