"""Tests for L{tmd.web.openapi}: the served description is valid and covers the API."""

from __future__ import annotations

import json
import re
from typing import Any

from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from twisted.trial.unittest import SynchronousTestCase

from tmd.web.openapi import openapi_document

# Every operation the server implements, with the statuses it must document.
EXPECTED = {
    ("post", "/api/v1/rooms"): {"201", "400", "409", "413", "415", "429", "503"},
    ("get", "/api/v1/rooms/{name}"): {"200", "404", "503"},
    ("patch", "/api/v1/rooms/{name}"): {"200", "400", "401", "403", "404", "413", "415",
                                        "503"},
    ("delete", "/api/v1/rooms/{name}"): {"204", "401", "403", "404", "503"},
    ("post", "/api/v1/rooms/{name}/join"): {"201", "400", "401", "403", "404", "409",
                                            "413", "415", "429", "503"},
    ("get", "/api/v1/rooms/{name}/messages"): {"200", "400", "401", "404", "503"},
    ("post", "/api/v1/rooms/{name}/messages"): {"201", "400", "401", "403", "404", "413",
                                                "415", "429", "503"},
    ("delete", "/api/v1/rooms/{name}/messages/{seq}"): {"204", "400", "401", "403", "404",
                                                        "503"},
    ("patch", "/api/v1/rooms/{name}/messages/{seq}"): {"200", "400", "401", "403", "404",
                                                       "413", "415", "503"},
    ("put", "/api/v1/rooms/{name}/messages/{seq}/vote"): {"200", "400", "401", "403", "404",
                                                          "503"},
    ("delete", "/api/v1/rooms/{name}/messages/{seq}/vote"): {"200", "400", "401", "403",
                                                             "404", "503"},
    ("get", "/api/v1/rooms/{name}/votes"): {"200", "401", "404", "503"},
    ("get", "/api/v1/rooms/{name}/questions"): {"200", "400", "401", "404", "503"},
    ("get", "/api/v1/rooms/{name}/held"): {"200", "401", "404", "503"},
    ("post", "/api/v1/rooms/{name}/held/{id}/approve"): {"201", "400", "401", "403", "404",
                                                         "413", "415", "503"},
    ("delete", "/api/v1/rooms/{name}/held/{id}"): {"204", "401", "403", "404", "503"},
    ("get", "/api/v1/rooms/{name}/restricted-words"): {"200", "401", "403", "404", "503"},
    ("put", "/api/v1/rooms/{name}/restricted-words"): {"200", "400", "401", "403", "404",
                                                       "413", "415", "503"},
    ("get", "/api/v1/rooms/{name}/stats"): {"200", "400", "401", "403", "404", "503"},
    ("get", "/api/v1/rooms/{name}/participants"): {"200", "401", "403", "404", "503"},
    ("post", "/api/v1/rooms/{name}/participants/{id}/mute"): {"204", "401", "403", "404",
                                                              "503"},
    ("delete", "/api/v1/rooms/{name}/participants/{id}/mute"): {"204", "401", "403", "404",
                                                                "503"},
    ("get", "/api/v1/rooms/{name}/transcript"): {"200", "400", "401", "404", "503"},
    ("get", "/api/v1/rooms/{name}/qr.svg"): {"200", "304", "400", "404", "503"},
    ("get", "/api/v1/rooms/{name}/live"): {"101"},
    ("get", "/api/v1/rooms/{name}/events"): {"200", "400", "401", "404", "503"},
    **{(method, "/replay/{path}"): {"202", "401", "404", "405", "413", "503"}
       for method in ("post", "put", "patch", "delete")},
    ("get", "/healthz"): {"200", "503"},
    ("get", "/metrics"): {"200", "404"},
    ("get", "/api/v1/openapi.json"): {"200"},
    ("get", "/"): {"200"},
    ("get", "/{name}"): {"200"},
    ("get", "/{name}/present"): {"200"},
}

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): operation
            for path, item in document["paths"].items()
            for method, operation in item.items() if method in METHODS}


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local C{$ref} (one level, as the document uses them)."""
    if "$ref" not in node:
        return node
    target: Any = document
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return dict(target)


class OpenAPIDocumentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.document = openapi_document("1.2.3")

    def test_valid(self) -> None:
        """The document is a valid OpenAPI 3.1 description."""
        self.assertEqual(self.document["openapi"], "3.1.0")
        validate(self.document, cls=OpenAPIV31SpecValidator)

    def test_validator_rejects_broken(self) -> None:
        """The validator used above does catch mistakes, e.g. an undeclared path parameter."""
        item = self.document["paths"]["/api/v1/rooms/{name}"]
        del item["parameters"]
        self.assertRaises(OpenAPIValidationError, validate, self.document,
                          cls=OpenAPIV31SpecValidator)

    def test_info(self) -> None:
        """C{info} names tmd and the given version; no servers, so URLs are relative."""
        self.assertEqual(self.document["info"]["title"], "tmd")
        self.assertEqual(self.document["info"]["version"], "1.2.3")
        self.assertNotIn("servers", self.document)

    def test_operations(self) -> None:
        """Exactly the implemented operations are present, each with its responses."""
        found = operations(self.document)
        self.assertEqual(set(found), set(EXPECTED))
        for key, statuses in EXPECTED.items():
            missing = statuses - set(found[key]["responses"])
            self.assertEqual(missing, set(), key)

    def test_errors_use_error_schema(self) -> None:
        """Every 4xx response has an C{Error} JSON body."""
        checked = 0
        for key, operation in operations(self.document).items():
            for status, response in operation["responses"].items():
                content = resolve(self.document, response).get("content", {})
                if status.startswith("4") and "text/html" not in content:  # pages: HTML, saying so
                    body = content["application/json"]
                    self.assertEqual(body["schema"], {"$ref": "#/components/schemas/Error"},
                                     (key, status))
                    checked += 1
        self.assertGreater(checked, 20)

    def test_error_codes(self) -> None:
        """The Error schema lists every code in API.md plus the server's own."""
        detail = self.document["components"]["schemas"]["ErrorDetail"]
        self.assertEqual(set(detail["properties"]["code"]["enum"]), {
            "bad_request", "invalid_name", "name_taken", "not_found", "unauthorized",
            "forbidden", "room_closed", "room_paused", "muted", "too_long", "empty",
            "rate_limited", "payload_too_large", "method_not_allowed", "unavailable",
            "internal", "restricted", "qa_off", "not_a_question", "room_locked"})
        error = self.document["components"]["schemas"]["Error"]
        self.assertEqual(error["required"], ["error"])

    def test_rate_limit_header(self) -> None:
        """A 429 tells the client when to retry."""
        post = self.document["paths"]["/api/v1/rooms/{name}/messages"]["post"]
        response = resolve(self.document, post["responses"]["429"])
        self.assertEqual(response["headers"]["Retry-After"]["schema"]["type"], "integer")

    def test_security(self) -> None:
        """Posting needs a bearer token; reading takes one optionally."""
        scheme = self.document["components"]["securitySchemes"]["bearerAuth"]
        self.assertEqual((scheme["type"], scheme["scheme"]), ("http", "bearer"))
        messages = self.document["paths"]["/api/v1/rooms/{name}/messages"]
        self.assertEqual(messages["post"]["security"], [{"bearerAuth": []}])
        self.assertIn({}, messages["get"]["security"])
        self.assertIn({"bearerAuth": []}, messages["get"]["security"])

    def test_room_schema(self) -> None:
        """Room has every field of API.md, all required, and its example fits."""
        room = self.document["components"]["schemas"]["Room"]
        fields = ["name", "title", "state", "created_at", "expires_at", "max_length",
                  "has_password", "hashtags", "online", "last_seq",
                  "id", "qa", "moderation", "locked", "host_name", "pinned"]  # room-tools.md
        self.assertEqual(room["required"], fields)
        self.assertEqual(list(room["examples"][0]), fields)
        self.assertEqual(room["properties"]["state"]["enum"], ["open", "paused", "closed"])

    def test_room_name_pattern(self) -> None:
        """The room-name parameter accepts slugs in any case and refuses the rest."""
        parameter = self.document["paths"]["/api/v1/rooms/{name}"]["parameters"][0]
        pattern = re.compile(parameter["schema"]["pattern"])
        for good in ["physics-101", "Physics-101", "a1", "x" * 63]:
            self.assertTrue(pattern.search(good), good)
        for bad in ["-x", "a", "x" * 64, "a_b", "a b", "ä1"]:
            self.assertIsNone(pattern.search(bad), bad)
        create = self.document["components"]["schemas"]["CreateRoom"]
        self.assertEqual(create["properties"]["name"]["pattern"], pattern.pattern)
        self.assertEqual(create["required"], ["name"])

    def test_json_serialisable(self) -> None:
        """The document survives a JSON round trip unchanged (no tuples, no objects)."""
        self.assertEqual(json.loads(json.dumps(self.document)), self.document)

    def test_fresh_each_call(self) -> None:
        """Changing one document does not change the next."""
        self.document["paths"]["/healthz"]["get"]["responses"].clear()
        self.document["components"]["schemas"]["Room"]["required"].append("x")
        again = openapi_document("1.2.3")
        self.assertIn("200", again["paths"]["/healthz"]["get"]["responses"])
        self.assertNotIn("x", again["components"]["schemas"]["Room"]["required"])
