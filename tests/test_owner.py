"""
The owner's changes over real HTTP, and what live clients see of them: room settings
(a C{room} frame), deleted messages (a C{deleted} frame) and deleted rooms (4404).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.clients import connect, count
from tests.server import Server, start_server

ROOM = "/api/v1/rooms/physics-101"


class OwnerTests(TestCase):
    async def setUp(self) -> None:
        self.server: Server = await start_server(self)
        self.http = self.server.http
        self.tokens = await self.server.room_with("physics-101", "ada", lifetime=7200)
        _, other = await self.server.chat.create_room({"name": "chemistry"})
        self.tokens["other owner"] = other
        room = await self.server.chat.room("physics-101")
        ada = await self.server.chat.participant(room, self.tokens["ada"])
        assert ada is not None
        self.ada_id = ada.id

    async def posted(self, body: str) -> int:
        code, message = await self.http.call("POST", f"{ROOM}/messages", {"body": body},
                                             token=self.tokens["ada"])
        self.assertEqual(code, 201)
        return int(message["seq"])

    async def test_owner_only(self) -> None:
        """No token is a 401; a participant's or another room's owner token is a 403."""
        calls: list[tuple[str, str, Any]] = [
            ("PATCH", ROOM, {"state": "paused"}),
            ("DELETE", f"{ROOM}/messages/1", None),
            ("GET", f"{ROOM}/participants", None),
            ("POST", f"{ROOM}/participants/{self.ada_id}/mute", None),
            ("DELETE", f"{ROOM}/participants/{self.ada_id}/mute", None),
            ("DELETE", ROOM, None),
        ]
        await self.posted("m1")
        for method, path, body in calls:
            code, error = await self.http.call(method, path, body)
            self.assertEqual((code, error["error"]["code"]), (401, "unauthorized"), path)
            for who in ("ada", "other owner"):
                code, error = await self.http.call(method, path, body, token=self.tokens[who])
                self.assertEqual((code, error["error"]["code"]), (403, "forbidden"), (path, who))
        self.assertEqual((await self.http.call("GET", ROOM))[0], 200)

    async def test_update(self) -> None:
        """PATCH changes state, title, hashtags and lifetime; live clients get a room frame."""
        client = await connect(self.server.port, f"{ROOM}/live")
        await client.wait_for(count("welcome", 1))
        code, room = await self.http.call("PATCH", ROOM, {
            "state": "paused", "title": " Waves ", "hashtags": ["waves", "#Light"],
            "lifetime": 3 * 3600, "unknown": "ignored"}, token=self.tokens["owner"])
        self.assertEqual(code, 200)
        self.assertEqual((room["state"], room["title"], room["hashtags"]),
                         ("paused", "Waves", ["#waves", "#Light"]))
        self.assertEqual(room["expires_at"][:13], _hours_later(room["created_at"], 3)[:13])
        frames = await client.wait_for(count("room", 1))
        self.assertEqual([f["room"] for f in frames if f["type"] == "room"],
                         [{**room, "online": 1}])
        code, error = await self.http.call("POST", f"{ROOM}/messages", {"body": "hi"},
                                           token=self.tokens["ada"])
        self.assertEqual((code, error["error"]["code"]), (403, "room_paused"))
        code, room = await self.http.call("PATCH", ROOM, {"state": "open"},
                                          token=self.tokens["owner"])
        self.assertEqual((code, room["state"], room["title"]), (200, "open", "Waves"))

    async def test_update_errors(self) -> None:
        """Bad values are 400s; a closed room cannot be changed (403 room_closed)."""
        owner = self.tokens["owner"]
        for body in ({"state": "gone"}, {"title": 5}, {"hashtags": ["no spaces"]},
                     {"lifetime": 10}, {"title": "x" * 201}):
            code, error = await self.http.call("PATCH", ROOM, body, token=owner)
            self.assertEqual((code, error["error"]["code"]), (400, "bad_request"), body)
        self.assertEqual((await self.http.call("PATCH", ROOM, {"state": "closed"},
                                               token=owner))[0], 200)
        code, error = await self.http.call("PATCH", ROOM, {"state": "open"}, token=owner)
        self.assertEqual((code, error["error"]["code"]), (403, "room_closed"))

    async def test_delete_message(self) -> None:
        """A deleted message leaves listings; live clients get a deleted frame; twice is 404."""
        for body in ("m1", "m2", "m3"):
            await self.posted(body)
        client = await connect(self.server.port, f"{ROOM}/live")
        await client.wait_for(count("message", 3))
        code, _ = await self.http.call("DELETE", f"{ROOM}/messages/2", token=self.tokens["owner"])
        self.assertEqual(code, 204)
        frames = await client.wait_for(count("deleted", 1))
        self.assertEqual(frames[-1], {"type": "deleted", "seq": 2})
        _, page = await self.http.call("GET", f"{ROOM}/messages")
        self.assertEqual(([m["seq"] for m in page["messages"]], page["last_seq"]), ([1, 3], 3))
        for seq, status, error_code in (("2", 404, "not_found"), ("9", 404, "not_found"),
                                        ("0", 400, "bad_request"), ("x", 400, "bad_request"),
                                        ("\u00b2", 400, "bad_request")):
            code, error = await self.http.call("DELETE", f"{ROOM}/messages/{seq}",
                                               token=self.tokens["owner"])
            self.assertEqual((code, error["error"]["code"]), (status, error_code), seq)

    async def test_mute(self) -> None:
        """A muted participant reads but cannot post, over HTTP and the socket, until unmuted."""
        owner, ada = self.tokens["owner"], self.tokens["ada"]
        ada_id = self.ada_id
        seq = await self.posted("before")
        _, page = await self.http.call("GET", f"{ROOM}/messages")
        self.assertEqual(page["messages"][0]["participant_id"], ada_id)
        mute = f"{ROOM}/participants/{ada_id}/mute"
        for _ in range(2):  # idempotent
            self.assertEqual((await self.http.call("POST", mute, token=owner))[0], 204)
        _, listed = await self.http.call("GET", f"{ROOM}/participants", token=owner)
        self.assertEqual(listed, {"participants": [
            {"id": ada_id, "nickname": "ada", "muted": True}]})
        code, error = await self.http.call("POST", f"{ROOM}/messages", {"body": "x"}, token=ada)
        self.assertEqual((code, error["error"]["code"]), (403, "muted"))
        client = await connect(self.server.port, f"{ROOM}/live?token={ada}")
        await client.wait_for(count("message", 1))
        client.post("on the socket", "r1")
        frames = await client.wait_for(count("error", 1))
        self.assertEqual((frames[-1]["code"], frames[-1]["ref"]), ("muted", "r1"))
        self.assertEqual((await self.http.call("DELETE", mute, token=owner))[0], 204)
        self.assertEqual(await self.posted("after"), seq + 1)
        for path in (f"{ROOM}/participants/nobody/mute", f"{ROOM}/participants/{'x' * 65}/mute",
                     f"/api/v1/rooms/chemistry/participants/{ada_id}/mute"):
            token = self.tokens["other owner"] if "chemistry" in path else owner
            code, error = await self.http.call("POST", path, token=token)
            self.assertEqual((code, error["error"]["code"]), (404, "not_found"), path)

    async def test_delete_room(self) -> None:
        """A deleted room is gone (404), its sockets are told and closed with 4404."""
        await self.posted("m1")
        client = await connect(self.server.port, f"{ROOM}/live?token={self.tokens['ada']}")
        await client.wait_for(count("message", 1))
        code, _ = await self.http.call("DELETE", ROOM, token=self.tokens["owner"])
        self.assertEqual(code, 204)
        self.assertEqual(await client.closed, 4404)
        self.assertEqual(client.frames[-1]["code"], "not_found")
        code, error = await self.http.call("GET", ROOM)
        self.assertEqual((code, error["error"]["code"]), (404, "not_found"))
        code, _ = await self.http.call("DELETE", ROOM, token=self.tokens["owner"])
        self.assertEqual(code, 404)


def _hours_later(timestamp: str, hours: int) -> str:
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")) + timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")
