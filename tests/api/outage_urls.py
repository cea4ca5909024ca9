"""A test URLconf: the portal's own URLs plus a few probes that really use the cache and the
task queue, so tests can point those at a closed port and see what users would get.

The probes go through the same error handling as the portal (the errors middleware, and the
API's handlers via install_error_handlers); the failures they meet are real connection errors.
"""

from __future__ import annotations

from celery import Celery
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import path
from ninja import NinjaAPI

from portal.api.main import install_error_handlers
from portal.urls import handler500  # noqa: F401 - handler500 re-exported
from portal.urls import urlpatterns as portal_urlpatterns

CLOSED = "redis://127.0.0.1:1/0"
# A broker nobody listens on; no retries, so the failure comes at once (as a short timeout would).
dead_broker = Celery("outage-probe", broker=CLOSED, set_as_current=False)
dead_broker.conf.update(task_publish_retry=False, broker_connection_retry=False,
                        broker_connection_max_retries=0, broker_transport_options={"max_retries": 0})

probe_api = NinjaAPI(urls_namespace="outage-probe", auth=None, docs_url=None)
install_error_handlers(probe_api)


@probe_api.get("/cache")
def api_cache(request: HttpRequest):
    return {"value": cache.get("outage-probe")}


@probe_api.post("/queue")
def api_queue(request: HttpRequest):
    dead_broker.send_task("workers.tasks.nodes.check_nodes_task")
    return {"queued": True}


def page_cache(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(cache.get("outage-probe")))


def page_queue(request: HttpRequest) -> HttpResponse:
    dead_broker.send_task("workers.tasks.nodes.check_nodes_task")
    return HttpResponse("queued")


urlpatterns = [
    path("api/probe/", probe_api.urls),
    path("probe/cache", page_cache),
    path("probe/queue", page_queue),
    *portal_urlpatterns,
]
