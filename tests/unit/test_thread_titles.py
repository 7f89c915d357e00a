"""A thread's title as the model (or the first message) gives it: one clean line, bounded."""

from __future__ import annotations

import pytest

from service.threads.titles import FALLBACK_CHARS, clean_title


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ('"Trip to Lisbon."', "Trip to Lisbon"),
        ("\u201cMiso the cat\u201d\n", "Miso the cat"),
        ("  **Plans   for\tthe week**  ", "Plans for the week"),
        ("", ""),
    ],
)
def test_a_title_is_one_line_without_wrapping_quotes(text: str, title: str) -> None:
    assert clean_title(text) == title


def test_a_long_first_message_is_cut_at_a_word() -> None:
    title = clean_title("word " * 40)
    assert len(title) <= FALLBACK_CHARS + 1 and title.endswith("word…")
