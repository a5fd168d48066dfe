"""Tests for L{tmd.words}: restricted words matched whole, ignoring case and accents."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tmd import words
from tmd.words import Matcher, check_words, normalise


class NormaliseTests(SynchronousTestCase):
    def test_case_and_accents(self) -> None:
        """Case, accents and compatibility forms go: one form per word."""
        self.assertEqual({normalise(w) for w in ("Café", "CAFE", "café", "cafe\u0301", "ｃａｆé")},
                         {"cafe"})

    def test_special_cases(self) -> None:
        """German sharp s folds to ss; Turkish dotted capital I to i; Greek final sigma folds."""
        self.assertEqual(normalise("Straße"), "strasse")
        self.assertEqual(normalise("İstanbul"), "istanbul")
        self.assertEqual(normalise("ΟΔΟΣ"), normalise("οδός"))


class MatcherTests(SynchronousTestCase):
    def test_whole_words(self) -> None:
        """A word is found only whole: not inside another word, whatever surrounds it."""
        matcher = Matcher(["ass"])
        self.assertEqual(matcher.matches("what an ASS!"), ["ass"])
        self.assertEqual(matcher.matches("(ass)"), ["ass"])
        for text in ("class", "assume", "bass guitar", "ass_x", "ass2"):
            self.assertEqual(matcher.matches(text), [], text)

    def test_accents_and_case_both_ways(self) -> None:
        """The owner's word and the post are normalised alike, whichever carries accents."""
        self.assertEqual(Matcher(["cafe"]).matches("Un CAFÉ, s'il vous plaît"), ["cafe"])
        self.assertEqual(Matcher(["Café"]).matches("cafe au lait"), ["Café"])

    def test_unicode_word_boundaries(self) -> None:
        """Letters of any script make words: Cyrillic and Greek words match whole only."""
        matcher = Matcher(["дурак", "βλάκας"])
        self.assertEqual(matcher.matches("Ты ДУРАК."), ["дурак"])
        self.assertEqual(matcher.matches("дураки"), [])
        self.assertEqual(matcher.matches("είσαι βλακας"), ["βλάκας"])

    def test_phrases(self) -> None:
        """A phrase matches the same words in a row, any white space between them."""
        matcher = Matcher(["the answer is"])
        self.assertEqual(matcher.matches("I think THE  answer\nis 42"), ["the answer is"])
        self.assertEqual(matcher.matches("the answer, is"), [])
        self.assertEqual(matcher.matches("the answers is"), [])

    def test_punctuation_inside(self) -> None:
        """Punctuation in a word is part of it: 'f*ck' does not match 'f ck'."""
        matcher = Matcher(["f*ck", "c++"])
        self.assertEqual(matcher.matches("oh f*ck"), ["f*ck"])
        self.assertEqual(matcher.matches("f ck"), [])
        self.assertEqual(matcher.matches("I like C++ a lot"), ["c++"])

    def test_unspaced_scripts(self) -> None:
        """Chinese, Japanese or Thai words match anywhere: those scripts have no word spaces."""
        matcher = Matcher(["笨蛋", "バカ"])
        self.assertEqual(matcher.matches("你是笨蛋吗"), ["笨蛋"])
        self.assertEqual(matcher.matches("このバカ!"), ["バカ"])
        self.assertEqual(matcher.matches("你好"), [])

    def test_several_and_limit(self) -> None:
        """Every word found once, in order, at most C{limit}."""
        matcher = Matcher(["one", "two", "three"])
        self.assertEqual(matcher.matches("three one two one"), ["three", "one", "two"])
        self.assertEqual(matcher.matches("three one two", limit=2), ["three", "one"])
        self.assertFalse(Matcher([]))

    def test_builtin_english(self) -> None:
        """The built-in English list (better-profanity's) is there and matches whole words."""
        self.assertIn("en", words.available_lists())
        matcher = words.matcher((), ("en",))
        self.assertTrue(matcher.matches("you bastard"))
        self.assertEqual(matcher.matches("Scunthorpe classes assess"), [])


class CheckWordsTests(SynchronousTestCase):
    def test_cleaned(self) -> None:
        """Words are trimmed, inner white space squeezed, duplicates by normal form dropped."""
        self.assertEqual(check_words([" spoiler ", "the   answer", "SPOILER", "Spóiler"]),
                         ("spoiler", "the answer"))

    def test_bounds(self) -> None:
        """At most 500 words of 1 to 100 characters."""
        check_words([f"w{i}" for i in range(500)])
        for bad in ([f"w{i}" for i in range(501)], ["x" * 101], [""], ["   "]):
            self.assertRaises(ValueError, check_words, bad)

    def test_refused(self) -> None:
        """Non-strings, control or invisible characters, and marks alone are refused."""
        for bad in ([3], [None], ["a\x00b"], ["a\u200bb"], ["\u0301\u0301"]):
            self.assertRaises(ValueError, check_words, bad)
