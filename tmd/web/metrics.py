"""
C{GET /metrics}: on the main port, or alone on an endpoint of its own
(C{--metrics-listen}), which an operator can keep off the public network.
"""

from __future__ import annotations

from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.iweb import IRequest

from tmd.metrics import CONTENT_TYPE, Metrics
from tmd.service import Listener
from tmd.web.errors import add_error_handling
from tmd.web.request import MeasuredSite, RoutedKlein


def metrics_page(request: IRequest, metrics: Metrics) -> bytes:
    """Every metric, read now, in the Prometheus text format."""
    request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
    request.setHeader(b"Cache-Control", b"no-store")
    return metrics.exposition()


class MetricsApp:
    """The metrics and nothing else: any other path is the API's JSON 404."""

    app = RoutedKlein()
    add_error_handling(app)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        return metrics_page(request, self._metrics)


class MetricsService(Listener):
    """Serves L{MetricsApp} on C{endpoint}."""

    def __init__(self, endpoint: IStreamServerEndpoint, metrics: Metrics) -> None:
        self.site = MeasuredSite(MetricsApp(metrics).app.resource(), metrics)
        super().__init__(endpoint, self.site, "tmd metrics")
