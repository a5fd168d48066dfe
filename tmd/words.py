"""
Restricted words: which of a room owner's words or phrases a post contains.

Both the post and the words are normalised the same way (compatibility forms
decomposed, combining marks dropped, case folded), so "Café", "CAFE" and "café"
are one word. Matching is by whole words: the text is cut into tokens (runs of
letters, digits and marks; each other visible character alone) and a word or
phrase matches a run of consecutive tokens, so "ass" is not found in "class" and
"the answer" is found in "The  ANSWER" but not in "the, answer". Scripts written
without spaces between words (Chinese, Japanese, Thai, ...) have no such
boundaries: words in them match anywhere.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from importlib.resources import files

MAX_WORDS = 500
MAX_WORD_LENGTH = 100
MAX_MATCHED = 5
"""The most matched words a held post lists."""

BUILTIN_LISTS = {"en": ("better_profanity", "profanity_wordlist.txt")}
"""Built-in lists by language: the package and file of a kept word list."""

_UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN",
                     "IDEOGRAPHIC", "YI ")


def normalise(text: str) -> str:
    """C{text} decomposed, without combining marks, case folded."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _is_word_character(c: str) -> bool:
    return c == "_" or unicodedata.category(c)[0] in "LNM"


def tokens(text: str) -> tuple[str, ...]:
    """The tokens of normalised C{text}: words, and each other visible character alone."""
    found: list[str] = []
    word: list[str] = []
    for c in text:
        if _is_word_character(c):
            word.append(c)
            continue
        if word:
            found.append("".join(word))
            word = []
        if not c.isspace() and unicodedata.category(c)[0] != "C":
            found.append(c)
    if word:
        found.append("".join(word))
    return tuple(found)


def _unspaced(word: str) -> bool:
    """Whether C{word} is written in scripts without spaces between words."""
    return all(unicodedata.name(c, "").startswith(_UNSPACED_SCRIPTS) for c in word if
               not c.isspace())


class Matcher:
    """A room's words and phrases, ready to look for in posts."""

    def __init__(self, words: Iterable[str]) -> None:
        self._phrases: dict[tuple[str, ...], str] = {}
        self._anywhere: dict[str, str] = {}
        for word in words:
            normal = normalise(word)
            if _unspaced(normal):
                self._anywhere.setdefault("".join(normal.split()), word)
            elif phrase := tokens(normal):
                self._phrases.setdefault(phrase, word)
        self._longest = max(map(len, self._phrases), default=0)

    def __bool__(self) -> bool:
        return bool(self._phrases or self._anywhere)

    def matches(self, text: str, limit: int = MAX_MATCHED) -> list[str]:
        """The words (as given) that C{text} contains, in the order found, at most C{limit}."""
        normal = normalise(text)
        found: dict[str, None] = {}
        if self._phrases:
            cut = tokens(normal)
            for start in range(len(cut)):
                for length in range(1, min(self._longest, len(cut) - start) + 1):
                    word = self._phrases.get(cut[start:start + length])
                    if word is not None:
                        found[word] = None
        if self._anywhere:
            squeezed = "".join(normal.split())
            for part, word in self._anywhere.items():
                if part in squeezed:
                    found[word] = None
        return list(found)[:limit]


def check_words(words: list[object]) -> tuple[str, ...]:
    """
    An owner's list, cleaned (trimmed, duplicates after normalising dropped), or
    C{ValueError} saying what is wrong with it.
    """
    if len(words) > MAX_WORDS:
        raise ValueError(f"A room has at most {MAX_WORDS} restricted words.")
    kept: dict[str, str] = {}
    for word in words:
        if not isinstance(word, str):
            raise ValueError("Each restricted word is a string.")
        word = " ".join(word.split())
        if not 1 <= len(word) <= MAX_WORD_LENGTH:
            raise ValueError(f"A restricted word is 1 to {MAX_WORD_LENGTH} characters.")
        if any(unicodedata.category(c)[0] == "C" for c in word):
            raise ValueError("A restricted word has no control or invisible characters.")
        normal = normalise(word)
        if not tokens(normal) and not normal.strip():
            raise ValueError(f"The restricted word {word!r} has nothing to match.")
        kept.setdefault(normal, word)
    return tuple(kept.values())


@lru_cache(maxsize=len(BUILTIN_LISTS))
def builtin_list(name: str) -> tuple[str, ...]:
    """The built-in list C{name} (a key of L{BUILTIN_LISTS}). Reads a file: off the reactor."""
    package, filename = BUILTIN_LISTS[name]
    text = files(package).joinpath(filename).read_text("utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def available_lists() -> list[str]:
    """The built-in lists whose package is installed."""
    found = []
    for name, (package, _) in BUILTIN_LISTS.items():
        try:
            files(package)
        except ModuleNotFoundError:
            continue
        found.append(name)
    return found


@lru_cache(maxsize=256)
def matcher(words: tuple[str, ...], lists: tuple[str, ...]) -> Matcher:
    """The matcher of C{words} and the built-in C{lists} (already loaded), built once per set."""
    every = list(words)
    for name in lists:
        every.extend(builtin_list(name))
    return Matcher(every)
