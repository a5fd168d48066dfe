"""
The HTTP API against its own OpenAPI document: schemathesis, run against a real
C{twistd -n tmd}, generates requests for every operation the served document holds
(examples, boundary values, random and schema-violating data, and stateful runs
along links: create a room, then join it, post, change it, list its participants).
Every response must be no 5xx, documented (status, content type, headers), of its
schema (errors: the API's error body), and schema-valid requests must be accepted,
schema-violating ones refused.

The run is bounded (examples per operation, a fixed seed, no example database) and
runs as a subprocess: schemathesis speaks blocking HTTP, the daemon a reactor.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.clients import Http
from tests.integration.daemon import Daemon

MAX_EXAMPLES = int(os.environ.get("TMD_FUZZ_EXAMPLES", "25"))
"""Generated cases per operation and phase: quick in CI; raise it for a longer run by hand."""
SEED = int(os.environ.get("TMD_FUZZ_SEED", "20261124"))
REPLAY_TOKEN = "fuzz-replay-token"
UNLIMITED = ("--limit", "participant_posts=off", "--limit", "address_posts=off",
             "--limit", "address_joins=off", "--limit", "address_rooms=off")
"""Rate limits off: every request reaches the code behind the limit (test_limits tests them)."""

log = Logger()


def with_links(document: dict[str, Any]) -> dict[str, Any]:
    """
    C{document} with OpenAPI links for the stateful phase: what a room's creation
    returns (its name, its owner token) feeds the owner's operations and joining; what
    joining returns (the participant token) feeds posting.
    """
    name = {"path.name": "$response.body#/room/name"}
    owner = {**name, "header.Authorization": "Bearer {$response.body#/owner_token}"}
    links = {
        "createRoom": {"201": {
            "GetRoom": ("getRoom", name), "JoinRoom": ("joinRoom", name),
            "UpdateRoom": ("updateRoom", owner), "DeleteRoom": ("deleteRoom", owner),
            "ListParticipants": ("listParticipants", owner),
            "ListMessages": ("listMessages", name), "Transcript": ("getTranscript", name),
        }},
        "joinRoom": {"201": {
            "PostMessage": ("postMessage", {
                "path.name": "$request.path.name",
                "header.Authorization": "Bearer {$response.body#/token}"}),
            "ListMessages": ("listMessages", {
                "path.name": "$request.path.name",
                "header.Authorization": "Bearer {$response.body#/token}"}),
        }},
    }
    for path_item in document["paths"].values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or operation.get("operationId") not in links:
                continue
            for status, targets in links[operation["operationId"]].items():
                operation["responses"][status]["links"] = {
                    link: {"operationId": target, "parameters": parameters}
                    for link, (target, parameters) in targets.items()}
    return document


def config(base_url: str, report: Path, room: str, owner: str, poster: str, muted: str,
           ) -> str:
    """
    The schemathesis.toml for the run (TOML written by hand: the values are plain).
    Operations on one room are also sent to C{room}, whose C{owner} token and
    C{poster}'s participant token they carry, so fuzzing reaches past the lookups;
    C{muted} is the id of a participant the owner mutes and unmutes.
    """
    return f"""\
base-url = "{base_url}"
seed = {SEED}
workers = 1
request-timeout = 10

[generation]
max-examples = {MAX_EXAMPLES}
database = "none"

[checks]
enabled = true

[auth.openapi.bearerAuth]
bearer = "{poster}"

[reports.json]
enabled = true
path = "{report}"

[[operations]]
include-operation-id = ["postMessage", "listMessages", "getTranscript", "events"]
parameters = {{ "name" = "{room}" }}

[[operations]]
include-operation-id = ["muteParticipant", "unmuteParticipant", "deleteMessage"]
parameters = {{ "name" = "{room}", "id" = "{muted}" }}
headers = {{ Authorization = "Bearer {owner}" }}

[[operations]]
include-operation-id = ["events"]
max-stream-events = 1

# What no schema of a request can say, so these answers are checked for everything but
# whether the request was accepted: a websocket needs the handshake's headers (tests/
# test_fuzz_ws.py fuzzes it); votes need a room with questions on; and text is cleaned
# (trimmed, control and invisible characters dropped) before its length is checked, against
# the room's max_length for a post.
[[operations]]
include-operation-id = ["live", "voteQuestion", "unvoteQuestion"]
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = ["postMessage", "updateMessage", "joinRoom"]
checks.positive_data_acceptance.enabled = false
checks.negative_data_rejection.enabled = false

[[operations]]
include-path-regex = "^/replay/"
headers = {{ Authorization = "Bearer {REPLAY_TOKEN}" }}
"""


class SchemathesisTests(TestCase):
    timeout = 300

    def test_api_conforms(self) -> None:
        """Every operation of the served document, fuzzed: no failure of any check."""
        return Deferred.fromCoroutine(self._api_conforms())

    async def _api_conforms(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "replay-token").write_text(REPLAY_TOKEN)
        (directory / "tmd.toml").write_text(
            f'[replay]\ntoken_file = "{directory / "replay-token"}"\n'
            'downstreams = ["http://127.0.0.1:9"]\n')
        daemon = await Daemon.start(self, "--config", str(directory / "tmd.toml"),
                                    "--shutdown-timeout", "1", *UNLIMITED, directory=directory)
        http = Http(daemon.url)
        code, created = await http.call("POST", "/api/v1/rooms", {"name": "fuzzed"})
        self.assertEqual(code, 201)
        joined = {}
        for nickname in ("ada", "bob"):
            code, joined[nickname] = await http.call("POST", "/api/v1/rooms/fuzzed/join",
                                                     {"nickname": nickname})
            self.assertEqual(code, 201)
        code, document = await http.call("GET", "/api/v1/openapi.json")
        self.assertEqual(code, 200)

        schema = directory / "openapi.json"
        schema.write_text(json.dumps(with_links(document)))
        report = directory / "schemathesis.json"
        settings = directory / "schemathesis.toml"
        settings.write_text(config(daemon.url, report, "fuzzed", created["owner_token"],
                                   joined["ada"]["token"], joined["bob"]["participant"]["id"]))
        out, err, status = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "schemathesis.cli", "--config-file", str(settings), "--no-color", "run",
             str(schema)],
            env=dict(os.environ), path=str(directory),
            reactor=reactor)
        output = (out + err).decode("utf-8", "replace")
        self.assertTrue(report.exists(), output)
        results = json.loads(report.read_text())
        log.info("schemathesis: {cases} cases over {operations} operations in {seconds:.1f} s"
                 "\n{output}", cases=results["test_cases"]["generated"],
                 operations=results["operations"]["tested"], seconds=results["running_time"],
                 output=output)
        self.assertEqual((results["failures"], results["errors"], status), ([], [], 0), output)
        self.assertEqual(results["operations"]["tested"], results["operations"]["total"], output)
        self.assertNotIn("Unhandled", daemon.output)
        self.assertNotIn("Traceback", daemon.output)
