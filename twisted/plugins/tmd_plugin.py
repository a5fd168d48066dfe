"""The C{tmd} twistd plugin: C{twistd -n tmd --help} lists the options."""

from twisted.application.service import ServiceMaker

tmd = ServiceMaker(
    "tmd",
    "tmd.tap",
    "A backchannel chat service: rooms, live websocket chat and a browser page.",
    "tmd",
)
