"""
End to end, the JSON log: a real C{twistd -n tmd --log-format json} writes one JSON
object per line, and no token, password or webhook secret in any of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.clients import Http, connect, count
from tests.downstream import start_downstream
from tests.helpers import eventually
from tests.integration.daemon import CLEAN_STOP, Daemon
from tests.postgres import fresh_schema

ROOM = "/api/v1/rooms/logged"
ROOM_PASSWORD = "room-pass-5ecret"
REPLAY_TOKEN = "replay-token-5ecret"
HOOK_SECRET = "hook-signing-5ecret"
HOOK_PATH = "/hooks/path-5ecret?key=query-key-5ecret"
"""Webhook URLs often hold a secret, in the path or the query."""
SECRETS = (ROOM_PASSWORD, REPLAY_TOKEN, HOOK_SECRET, "5ecret")


class JsonLogTests(TestCase):
    timeout = 60

    def records(self, daemon: Daemon) -> list[dict[str, object]]:
        """Every line the daemon wrote, each parsed as one JSON object."""
        records = [json.loads(line) for line in daemon.lines if line.strip()]
        for record in records:
            self.assertEqual(set(record) & {"time", "level", "namespace", "text"},
                             {"time", "level", "namespace", "text"}, record)
        return records

    async def test_no_secrets(self) -> None:
        """
        Tokens in query strings and headers, a room's password, the reflektor's token,
        a webhook's secret and its URL's secrets never reach the log; the webhook's
        dead letter is logged under the URL's origin alone.
        """
        hook, hook_url = await start_downstream(self, [404])  # room.created: a dead letter
        reflected, reflected_url = await start_downstream(self)
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "replay-token").write_text(REPLAY_TOKEN)
        (directory / "hook-secret").write_text(HOOK_SECRET)
        config = directory / "tmd.toml"
        config.write_text(
            f'[[webhooks]]\nurl = "{hook_url}{HOOK_PATH}"\n'
            f'secret_file = "{directory / "hook-secret"}"\n'
            f'[replay]\ntoken_file = "{directory / "replay-token"}"\n'
            f'downstreams = ["{reflected_url}/base"]\n')
        daemon = await Daemon.start(self, "--config", str(config), "--log-format", "json",
                                    directory=directory)
        http = Http(daemon.url)
        code, created = await http.call("POST", "/api/v1/rooms",
                                        {"name": "logged", "password": ROOM_PASSWORD})
        self.assertEqual(code, 201)
        code, _ = await http.call("POST", f"{ROOM}/join",
                                  {"nickname": "eve", "password": "wrong-pass-5ecret"})
        self.assertEqual(code, 401)
        code, joined = await http.call("POST", f"{ROOM}/join",
                                       {"nickname": "ada", "password": ROOM_PASSWORD})
        self.assertEqual(code, 201)
        token = joined["token"]
        code, _ = await http.call("POST", f"{ROOM}/messages", {"body": "hello"}, token)
        self.assertEqual(code, 201)
        code, _ = await http.call("GET", f"{ROOM}/messages?after=0&token={token}", token=token)
        self.assertEqual(code, 200)
        code, _ = await http.call("GET", f"{ROOM}/messages", token="wrong-token-5ecret")
        self.assertEqual(code, 401)
        live = await connect(daemon.port, f"{ROOM}/live?since=0&token={token}")
        await live.wait_for(count("message", 1))
        code, _ = await http.call("POST", "/replay/in/x?sig=replayed-query-5ecret",
                                  token=REPLAY_TOKEN, data=b"{}")
        self.assertEqual(code, 202)
        await eventually(lambda: len(reflected.received) == 1 and len(hook.received) == 2)
        live.sendClose()
        await live.closed
        self.assertEqual(await daemon.stop(), CLEAN_STOP)

        records = self.records(daemon)
        for secret in (*SECRETS, token, created["owner_token"]):
            self.assertNotIn(secret, daemon.output)
        [dead] = [r for r in records if "gave up" in str(r["text"])]
        self.assertIn(f"webhook 1 {hook_url}: gave up on delivery", dead["text"])
        posted = [r for r in records if r["namespace"] == "tmd.access" and r["method"] == "POST"
                  and r["route"] == "/api/v1/rooms/<name>/messages"]
        self.assertEqual([(r["path"], r["status"]) for r in posted], [(f"{ROOM}/messages", 201)])

    async def test_database_password(self) -> None:
        """The PostgreSQL password, from --db-password-file, stays out of the log."""
        database = fresh_schema(self)
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "db-password").write_text("db-pass-5ecret\n")
        daemon = await Daemon.start(
            self, "--database", database, "--db-password-file", str(directory / "db-password"),
            "--log-format", "json", directory=directory)
        code, _ = await Http(daemon.url).call("GET", "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        self.records(daemon)
        self.assertNotIn("5ecret", daemon.output)
