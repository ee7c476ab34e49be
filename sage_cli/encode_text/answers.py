"""What counts as a usable answer of the chat model: descriptions of the class, not a refusal.

The prompt asks for one sentence per line, each naming the class. An answer is read as a list
(lines with their bullets and numbering removed, or a JSON list of strings) and each item is
judged on its structure, not on a list of phrases alone:

- a *description* is a plausible sentence (3 words or more, at most 400 characters, mostly
  letters) that names the class (a word of its name, singular or plural) without negating it
  ("not a cat"), and that does not talk about the speaker or the task (no "I", "me", "we", "our";
  no "description", "sentence", "request", "prompt", "assistant", "AI", "language model" ...);
- a *refusal* is an item in the known refusal phrases ("I'm sorry", "As an AI", "I cannot" ...),
  or one that talks about the speaker or the task *and* declines (a negation or a regret: "not",
  "cannot", "won't", "unable", "unfortunately", "regrettably", "sorry" ...);
- anything else is framing ("Here are five sentences:", "Sure!", "I hope these help.") or an
  unrelated line, and is left out.

An answer is usable when it holds no refusal and at least one description; only its descriptions
are used. So every text encoded for a class names that class, and an answer that declines in
words nobody listed is still refused when it speaks of itself or of the task while declining.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sage_cli.encode_text.templates import display_name

MIN_WORDS = 3  # a plausible sentence: "A red bird." and longer
MAX_SENTENCE_CHARS = 400
MAX_CHARS_PER_SENTENCE_ASKED = 1000  # an answer longer than n times this is a runaway generation

REFUSED = "a refusal, not a description"
NO_SENTENCE = "no plausible sentence in the answer"
NOT_NAMED = "no sentence names the class"

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)]|\(\d+\))\s*")
# Known refusals and meta talk: one signal among the others below.
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|as an ai\b|as a (?:large )?language model|"
    r"i can(?:'|no)?t (?:help|assist|provide|comply|describe|do)|i cannot|i'?m (?:not able|unable)|"
    r"i am (?:not able|unable))",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
# The speaker: "I" is matched as written (a sentence about a "Type I" engine is rare), "US" is a country.
_FIRST_PERSON_EXACT = {"I", "I'm", "I've", "I'd", "I'll", "Im", "Ive", "us", "Us"}
_FIRST_PERSON = {"me", "my", "mine", "myself", "we", "we're", "we've", "we'd", "we'll", "our", "ours", "ourselves"}
# The task, not the object: a description of a cat has no reason to use these words.
_TASK_WORDS = {"describe", "describing", "description", "descriptions", "sentence", "sentences", "request",
               "requests", "prompt", "prompts", "assistant", "chatbot", "policy", "policies", "guidelines", "task"}
# Declining: negations and regrets.
_DECLINE = {"not", "no", "never", "cannot", "unable", "impossible", "decline", "declines", "refuse", "refuses",
            "sorry", "unfortunately", "regrettably", "afraid", "apologies", "apologise", "apologize",
            "inappropriate", "forbidden", "prohibited"}
_STOP = {"a", "an", "the", "of", "and", "or", "with", "in", "on", "for", "to", "at", "by", "from"}


def check_answer(answer: Any, n: int, class_name: str) -> tuple[list[str], str | None]:
    """Up to ``n`` descriptions of ``class_name`` in ``answer`` and ``None``, or ``[]`` and why the
    answer is not usable (see the module docstring for the rules)."""
    if not isinstance(answer, str) or not answer.strip():
        return [], "an empty answer"
    if len(answer) > MAX_CHARS_PER_SENTENCE_ASKED * n:
        return [], f"an answer of {len(answer):,} characters for {n} sentence(s)"
    if _REFUSAL.search(_plain(answer)):
        return [], REFUSED
    descriptions, plausible = [], 0
    for item in parse_answer(answer, len(answer)):
        kind = classify_item(item, class_name)
        if kind == "refusal":
            return [], REFUSED
        plausible += kind != "implausible"
        if kind == "description":
            descriptions.append(item)
    if descriptions:
        return descriptions[:n], None
    if not plausible:
        return [], NO_SENTENCE
    return [], NOT_NAMED


def classify_item(item: str, class_name: str) -> str:
    """One of ``description``, ``refusal``, ``framing`` (speaker or task talk, a lead-in, an
    unrelated or contradicting sentence) or ``implausible`` (not a sentence)."""
    text = _plain(item)
    words = _WORD.findall(text)
    speaks = _about_speaker(words) or _about_task(text, words)
    if speaks and (_REFUSAL.search(text) or _declines(words)):
        return "refusal"
    if item.endswith(":"):
        return "framing"  # "Here are five sentences:"
    if not is_plausible_sentence(item):
        return "implausible"
    if speaks or not mentions_class(words, text, class_name) or negates_class(text, class_name):
        return "framing"
    return "description"


def is_plausible_sentence(line: str) -> bool:
    """Three or more words, mostly letters, not too long, not a lead-in ending in a colon."""
    if len(line) > MAX_SENTENCE_CHARS or line.endswith(":") or len(line.split()) < MIN_WORDS:
        return False
    visible = [c for c in line if not c.isspace()]
    return sum(c.isalpha() for c in visible) >= 0.6 * len(visible)


def mentions_class(words: list[str], text: str, class_name: str) -> bool:
    """Whether the sentence names the class: one of its words (singular or plural), or all of it."""
    name = display_name(class_name).casefold()
    if name and name in text.casefold():
        return True
    wanted = class_words(class_name)
    return any(word.casefold().removesuffix("'s") in wanted for word in words)


def negates_class(text: str, class_name: str) -> bool:
    """"This is not a cat", "no cat": the sentence denies the class it should describe."""
    words = "|".join(re.escape(w) for w in _WORD.findall(display_name(class_name).casefold()))
    if not words:
        return False
    pattern = rf"\b(?:not|no|never|isn't|aren't|wasn't)\s+(?:(?:a|an|the|any)\s+)?(?:{words})\b"
    return re.search(pattern, text.casefold()) is not None


def class_words(class_name: str) -> set[str]:
    """The words of a class name (without articles and prepositions) in singular and plural forms."""
    words = _WORD.findall(display_name(class_name).casefold())
    words = [w for w in words if w not in _STOP] or words
    return {form for word in words for form in _forms(word) | _forms(_singular(word))}


def parse_answer(answer: str, n: int) -> list[str]:
    """Up to ``n`` distinct items: a JSON list of strings, else one per non-empty line, with
    bullets, numbering, quotes and code fences removed."""
    items = _json_list(answer)
    raw = items if items is not None else answer.splitlines()
    lines: list[str] = []
    for text in raw:
        line = " ".join(_BULLET.sub("", text).split()).strip('"').strip()
        if line and not line.startswith("```") and line not in lines:
            lines.append(line)
    return lines[:n]


def _json_list(answer: str) -> list[str] | None:
    text = answer.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    if not text.startswith("["):
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, list) and all(isinstance(item, str) for item in data):
        return data
    return None


def _plain(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def _about_speaker(words: list[str]) -> bool:
    return any(w in _FIRST_PERSON_EXACT or w.casefold() in _FIRST_PERSON for w in words)


def _about_task(text: str, words: list[str]) -> bool:
    return ("AI" in words or "language model" in text.casefold()
            or any(w.casefold() in _TASK_WORDS for w in words))


def _declines(words: list[str]) -> bool:
    return any(w.casefold() in _DECLINE or w.casefold().endswith("n't") for w in words)


def _singular(word: str) -> str:
    """A crude singular: butterflies -> butterfly, boxes -> box, cats -> cat (a guess; both are tried)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _forms(word: str) -> set[str]:
    """``word`` and its plurals: cat, cats, cates; butterfly, butterflys, butterflies."""
    forms = {word, word + "s", word + "es"}
    if word.endswith("y") and len(word) > 2:
        forms.add(word[:-1] + "ies")
    return forms
