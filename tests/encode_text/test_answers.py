"""Which chat answers are descriptions: reworded refusals are refused, good answers kept (hand-written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_cli.encode_text.answers import NOT_NAMED, NO_SENTENCE, REFUSED, check_answer, classify_item
from sage_cli.encode_text.llm import generate_descriptions

from .test_llm import ChatServer, _cache_keys, _key, _llm, bulleted

# Refusals in words that the phrase list does not hold: each one used to be cached as descriptions.
REWORDED_REFUSALS = [
    ("dog", "Unfortunately, producing that kind of content is not something this assistant does.", REFUSED),
    ("dog", "Regrettably, a description of a dog cannot be provided.", REFUSED),
    ("dog", "1. Dog descriptions are not available.\n2. Please try another request.", REFUSED),
    ("dog", "Sure! Unfortunately a dog is not something I will picture here.", REFUSED),
    ("dog", "A dog? That is not a request we fulfil, sadly.", REFUSED),
    ("dog", "My apologies, but writing about dogs goes against my guidelines.", REFUSED),
    ("dog", "1. A dog with a long tail.\n2. That is all this assistant won't go further than.", REFUSED),
    ("cat", "I\u2019m afraid that is beyond what I do.", REFUSED),  # a curly apostrophe
    ("cat", "Describing a cat is beyond the scope of this service. Please consult a field guide.", NOT_NAMED),
    ("cat", "That request was flagged by the content filter and was not processed.", REFUSED),
    ("cat", '{"error": "the model is overloaded, please retry later"}', NOT_NAMED),
    ("cat", "This is not a cat, so there is nothing to write about it.", NOT_NAMED),
    ("cat", "Sure, here you go.\nHope that is useful!", NOT_NAMED),
    ("cat", "No.", NO_SENTENCE),
]

# Good answers, chatty or terse: (class, answer, the descriptions used).
GOOD_ANSWERS = [
    ("cat", "Sure! Here are two descriptions of a cat:\n1. A cat with pointed ears and long whiskers.\n"
            "2. A tabby cat curled up on a sofa.",
     ["A cat with pointed ears and long whiskers.", "A tabby cat curled up on a sofa."]),
    ("dog", '["A dog with floppy ears.", "A dog running across the grass."]',
     ["A dog with floppy ears.", "A dog running across the grass."]),
    ("great_white_shark", "- Great white sharks have a pale underside.\n- The shark's dorsal fin cuts the water.",
     ["Great white sharks have a pale underside.", "The shark's dorsal fin cuts the water."]),
    ("crow", "A crow does not have the wedge-shaped tail of a raven.\nA crow is glossy black all over.",
     ["A crow does not have the wedge-shaped tail of a raven.", "A crow is glossy black all over."]),
    ("cat", "A cat sitting on a windowsill in the sun.\nI hope these help!",
     ["A cat sitting on a windowsill in the sun."]),
    ("monarch_butterfly", "```\n1. Monarch butterflies have orange wings with black veins.\n"
                          "2. Its wings are edged with white dots.\n```",
     ["Monarch butterflies have orange wings with black veins."]),
    ("fox", "1. Two foxes with bushy tails in the snow.\n2. A red fox's pointed snout and ears.",
     ["Two foxes with bushy tails in the snow.", "A red fox's pointed snout and ears."]),
]


@pytest.mark.parametrize("name, answer, why", REWORDED_REFUSALS)
def test_reworded_refusals_are_not_descriptions(name: str, answer: str, why: str) -> None:
    assert check_answer(answer, 5, name) == ([], why)


@pytest.mark.parametrize("name, answer, used", GOOD_ANSWERS)
def test_good_answers_are_kept(name: str, answer: str, used: list[str]) -> None:
    assert check_answer(answer, 5, name) == (used, None)


def test_each_line_is_classified_by_its_structure() -> None:
    assert classify_item("A cat with pointed ears.", "cat") == "description"
    assert classify_item("A dog with floppy ears.", "cat") == "framing"  # another class
    assert classify_item("This is not a cat at all.", "cat") == "framing"  # contradicts the class
    assert classify_item("I like every cat I meet.", "cat") == "framing"  # the speaker, not the cat
    assert classify_item("Let us look at a cat.", "cat") == "framing"
    assert classify_item("A cat in a US Navy photo.", "cat") == "description"
    assert classify_item("A cat description is not possible.", "cat") == "refusal"  # the task, declined
    assert classify_item("Here are five sentences:", "cat") == "framing"
    assert classify_item("cat cat", "cat") == "implausible"


def test_only_n_descriptions_are_used() -> None:
    answer = "\n".join(f"A cat, picture number {i}." for i in range(8))
    assert check_answer(answer, 3, "cat") == (["A cat, picture number 0.", "A cat, picture number 1.",
                                               "A cat, picture number 2."], None)


def test_a_reworded_refusal_is_not_cached_and_is_asked_again(tmp_path: Path) -> None:
    cache = tmp_path / "answers.jsonl"
    refusal = "Regrettably, a description of a dog cannot be provided."
    refusing = ChatServer(content=lambda name, _: refusal if name == "dog" else bulleted(name, 0))
    try:
        first = generate_descriptions(_llm(refusing.url, cache), ["cat", "dog"])
    finally:
        refusing.close()
    assert first.rejected == {1: REFUSED} and sorted(first.sentences) == [0]
    assert _cache_keys(cache) == [_key("cat")]
    good = ChatServer()
    try:
        again = generate_descriptions(_llm(good.url, cache), ["cat", "dog"])
    finally:
        good.close()
    assert (again.cached, again.requests, len(good.requests)) == (1, 1, 1)
    assert again.sentences[1] == ["A dog seen from the side.", "A dog up close."]
