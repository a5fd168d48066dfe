"""The API's JSON helpers that have rules of their own."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.trial.unittest import SynchronousTestCase

from tmd.wire import timestamp


class TimestampTests(SynchronousTestCase):
    def test_rfc3339_milliseconds(self) -> None:
        """Milliseconds since the epoch read as RFC 3339 UTC with three decimals and Z."""
        self.assertEqual(
            [timestamp(ms) for ms in (0, 7, 999, 1000, 1_795_539_600_123, 253_402_300_799_999)],
            ["1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00.007Z", "1970-01-01T00:00:00.999Z",
             "1970-01-01T00:00:01.000Z", "2026-11-24T17:00:00.123Z", "9999-12-31T23:59:59.999Z"])

    def test_as_datetime_says(self) -> None:
        """Across leap years and month ends, the same instant datetime gives."""
        for ms in range(946_684_799_000, 4_102_444_800_000, 86_399_999_937):
            expected = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self.assertEqual(timestamp(ms), f"{expected}.{ms % 1000:03d}Z")
