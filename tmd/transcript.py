"""
A room's whole transcript as a file to keep: plain text, JSON, CSV or printable HTML.

A transcript can be long, so each format renders it piece by piece (a head, a page
of messages at a time, a tail) and L{Transcript.chunks} reads it from the store one
page at a time: the web layer sends each piece as it comes and nothing holds it all.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from tmd.errors import BadRequest
from tmd.model import Message
from tmd.wire import message_json, timestamp

PAGE = 1000
"""Messages read at a time: the most the store gives in one page."""

Fetch = Callable[[int, int], Awaitable[tuple[list[Message], int]]]
"""Reads a page: C{(after, limit)} to the undeleted messages after that seq, and the last seq."""


def utc(ms: int) -> str:
    """A time for people, to the second: C{2026-11-24 17:00:00Z}."""
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def one_line(text: str) -> str:
    """C{text} with its line breaks (all of Unicode's) turned into spaces."""
    return " ".join(text.splitlines())


def source_url(message: Message) -> str | None:
    url = (message.source or {}).get("url")
    return url if isinstance(url, str) else None


class Transcript:
    """One room's transcript in one format, rendered piece by piece for one download."""

    extension: ClassVar[str]
    media_type: ClassVar[str]
    headers: ClassVar[dict[str, str]] = {}
    """Response headers this format needs besides its C{Content-Type}."""

    def __init__(self, room: dict[str, Any], exported_at: int,
                 stats: dict[str, Any] | None = None) -> None:
        self.room = room  # as the API shows it
        self.exported_at = exported_at
        self.stats = stats
        """The participation statistics (as the API shows them), in the owner's copy only."""

    @property
    def filename(self) -> str:
        return f"{self.room['name']}-transcript.{self.extension}"

    def head(self) -> str:
        return ""

    def page(self, messages: list[Message]) -> str:
        raise NotImplementedError

    def tail(self) -> str:
        return ""

    async def chunks(self, fetch: Fetch) -> AsyncGenerator[bytes, None]:
        """The whole transcript in UTF-8: the head, then page after page, then the tail."""
        yield self.head().encode("utf-8")
        after = 0
        while True:
            messages, _ = await fetch(after, PAGE)
            if messages:
                yield self.page(messages).encode("utf-8")
            if len(messages) < PAGE:
                break
            after = messages[-1].seq
        yield self.tail().encode("utf-8")


class TextTranscript(Transcript):
    """One line per message; continuation lines are indented, so no body can fake a line."""

    extension, media_type = "txt", "text/plain; charset=utf-8"

    def head(self) -> str:
        return (f"{one_line(self.room['title'])}\n"
                f"Room: {self.room['name']}\n"
                f"Exported: {utc(self.exported_at)}\n"
                "All times are UTC.\n\n")

    def page(self, messages: list[Message]) -> str:
        return "".join(self._message(message) for message in messages)

    @staticmethod
    def _message(message: Message) -> str:
        first, *rest = message.body.splitlines() or [""]
        if message.kind == "system" or message.author is None:
            speaker = "*"
        else:
            url = source_url(message) if message.kind == "social" else None
            speaker = (one_line(message.author) + (" (host)" if message.host else "")
                       + (f" ({url})" if url else "") + ":")
        marks = _marks(message)
        if marks:
            speaker += f" [{marks}]"
        continued = "".join(f"    {line}\n" for line in rest)
        return f"[{utc(message.created_at)}] {speaker} {first}\n{continued}"

    def tail(self) -> str:
        if self.stats is None:
            return ""
        lines = ["", "Participation", f"Peak online: {self.stats['peak_online']}",
                 f"Messages: {self.stats['messages']} (questions: {self.stats['questions']},"
                 f" by the host: {self.stats['host_messages']}); votes: {self.stats['votes']};"
                 f" waiting for approval: {self.stats['held']}", ""]
        lines += [f"{one_line(p['nickname'])}: {p['messages']} messages, {p['questions']}"
                  f" questions, {p['votes']} votes" for p in self.stats["participants"]]
        return "\n".join(lines) + "\n"


def _marks(message: Message) -> str:
    """What a transcript line says of a question: C{question, 4 votes, answered}."""
    if not message.question:
        return ""
    votes = "1 vote" if message.votes == 1 else f"{message.votes} votes"
    return "question, " + votes + (", answered" if message.answered else "")


class JsonTranscript(Transcript):
    """C{{"room": Room, "messages": [Message, ...]}}, one message per line."""

    extension, media_type = "json", "application/json; charset=utf-8"

    def __init__(self, room: dict[str, Any], exported_at: int,
                 stats: dict[str, Any] | None = None) -> None:
        super().__init__(room, exported_at, stats)
        self._first = True

    def head(self) -> str:
        return f'{{"room":{_json(self.room)},\n"messages":['

    def page(self, messages: list[Message]) -> str:
        text = ",".join("\n" + _json(message_json(message)) for message in messages)
        if not self._first:
            text = "," + text
        self._first = False
        return text

    def tail(self) -> str:
        if self.stats is None:
            return "\n]}\n"
        return f"\n],\n\"stats\":{_json(self.stats)}}}\n"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A cell a spreadsheet will not run as a formula: those that look like one get a C{'}."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class CsvTranscript(Transcript):
    """One row per message, as RFC 4180 has it, safe to open in a spreadsheet."""

    extension, media_type = "csv", "text/csv; charset=utf-8"

    def head(self) -> str:
        return self._rows([("seq", "created_at", "kind", "author", "body", "source_url")])

    def page(self, messages: list[Message]) -> str:
        return self._rows([
            (m.seq, timestamp(m.created_at), m.kind, m.author or "", m.body,
             source_url(m) or "")
            for m in messages])

    @staticmethod
    def _rows(rows: list[tuple[object, ...]]) -> str:
        return _csv_rows(rows)


def _csv_rows(rows: list[tuple[object, ...]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()


def stats_csv(stats: dict[str, Any]) -> str:
    """The participation statistics (as the API shows them): one row per participant."""
    return _csv_rows([("id", "nickname", "messages", "questions", "votes")] + [
        (p["id"], p["nickname"], p["messages"], p["questions"], p["votes"])
        for p in stats["participants"]])


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #111; max-width: 48rem;
       margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
header p { color: #555; margin: 0 0 1.5rem; }
ol { list-style: none; margin: 0; padding: 0; }
li { padding: .3rem 0; border-bottom: 1px solid #eee; }
time { color: #666; font-variant-numeric: tabular-nums; margin-right: .5rem; }
.author { font-weight: 600; margin-right: .4rem; }
.body { white-space: pre-wrap; overflow-wrap: anywhere; }
.system { color: #555; font-style: italic; }
.source { margin-left: .4rem; font-size: .85em; }
.marks { margin-left: .4rem; font-size: .85em; color: #555; }
table { border-collapse: collapse; margin-top: 1rem; }
th, td { text-align: left; padding: .2rem .6rem; border-bottom: 1px solid #eee; }
@media print {
  body { font-size: 10pt; color: #000; max-width: none; margin: 0; }
  li { break-inside: avoid; border-color: #ccc; }
  a { color: inherit; }
  .source::after { content: " (" attr(href) ")"; }
}
"""


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


class HtmlTranscript(Transcript):
    """A standalone page to read or print; everything from users is escaped."""

    extension, media_type = "html", "text/html; charset=utf-8"
    # The page's only non-text content is its inline style: allow that, nothing else.
    headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}

    def head(self) -> str:
        title = _escape(self.room["title"])
        return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · transcript</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p>Transcript of room <code>{_escape(self.room["name"])}</code>, exported
{utc(self.exported_at)}. All times are UTC.</p>
</header>
<ol>
"""

    def page(self, messages: list[Message]) -> str:
        return "".join(self._message(message) for message in messages)

    @staticmethod
    def _message(message: Message) -> str:
        parts = [f'<li class="{_escape(message.kind)}" id="m{message.seq}">'
                 f'<time datetime="{timestamp(message.created_at)}">'
                 f"{utc(message.created_at)}</time>"]
        if message.kind != "system" and message.author is not None:
            host = " (host)" if message.host else ""
            parts.append(f'<span class="author">{_escape(message.author)}{host}</span>')
        parts.append(f'<span class="body">{_escape(message.body)}</span>')
        if marks := _marks(message):
            parts.append(f'<span class="marks">{_escape(marks)}</span>')
        url = source_url(message)
        if url is not None and url.startswith(("https://", "http://")):
            parts.append(f'<a class="source" href="{_escape(url)}" rel="nofollow noreferrer">'
                         "source</a>")
        return "".join(parts) + "</li>\n"

    def tail(self) -> str:
        return "</ol>\n" + self._stats() + "</body>\n</html>\n"

    def _stats(self) -> str:
        if self.stats is None:
            return ""
        s = self.stats
        rows = "".join(
            f"<tr><td>{_escape(p['nickname'])}</td><td>{p['messages']}</td>"
            f"<td>{p['questions']}</td><td>{p['votes']}</td></tr>\n" for p in s["participants"])
        return (f"<section>\n<h2>Participation</h2>\n<p>Peak online: {s['peak_online']}."
                f" Messages: {s['messages']} (questions: {s['questions']}, by the host:"
                f" {s['host_messages']}). Votes: {s['votes']}. Waiting for approval:"
                f" {s['held']}.</p>\n<table>\n<tr><th>participant</th><th>messages</th>"
                f"<th>questions</th><th>votes</th></tr>\n{rows}</table>\n</section>\n")


FORMATS: dict[str, type[Transcript]] = {
    "txt": TextTranscript, "json": JsonTranscript, "csv": CsvTranscript, "html": HtmlTranscript}


def transcript_format(name: str) -> type[Transcript]:
    """The transcript format called C{name}, or L{BadRequest} naming them all."""
    if name not in FORMATS:
        raise BadRequest(f"'format' is one of {', '.join(FORMATS)}.")
    return FORMATS[name]
