"""
C{GET /metrics}: on the main port, or alone on an endpoint of its own
(C{--metrics-listen}), which an operator can keep off the public network.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from tmd.metrics import CONTENT_TYPE, Metrics
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


class MetricsService(Service):
    """Serves L{MetricsApp} on C{endpoint}."""

    log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, metrics: Metrics) -> None:
        self._endpoint = endpoint
        self.site = MeasuredSite(MetricsApp(metrics).app.resource(), metrics)
        self._port: IListeningPort | None = None

    @property
    def port(self) -> int | None:
        """The TCP port listened on (useful with C{tcp:0}), once started."""
        return getattr(self._port.getHost(), "port", None) if self._port is not None else None

    def startService(self) -> Deferred[None]:
        super().startService()
        return Deferred.fromCoroutine(self._listen())

    async def _listen(self) -> None:
        self._port = await self._endpoint.listen(self.site)
        address = self._port.getHost()
        self.log.info("tmd metrics on {type} {host}:{port}", type=getattr(address, "type", ""),
                      host=getattr(address, "host", ""), port=getattr(address, "port", ""))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._port is not None:
            await maybeDeferred(self._port.stopListening)
