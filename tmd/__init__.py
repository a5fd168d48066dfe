"""tmd: a self-hosted backchannel chat service in one Twisted daemon."""

__version__ = "0.1.0"
