"""portal.urls plus /deploy-test/boom, a view that fails the way a bug would."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from portal.urls import urlpatterns as portal_urlpatterns


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("deploy-test: an unexpected error inside a view")


urlpatterns = [path("deploy-test/boom", boom), *portal_urlpatterns]
