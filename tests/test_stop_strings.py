"""Stop strings live in the text, not the tokens (engine/detokenizer.py): found across token
boundaries, cut from the output (or kept with include_stop_str_in_output), ignored before
min_tokens, and never half-streamed. A fake tokenizer makes the token boundaries explicit."""
import pytest

from course_lib.engine.detokenizer import IncrementalDetokenizer

PIECES = ["Hel", "lo", " wor", "ld", "\n", "#", "##", "é"[:1], "!"]


class Pieces:
    """Token i decodes to PIECES[i]; a text is the concatenation."""
    def decode(self, ids, skip_special_tokens=True):
        return "".join(PIECES[i] for i in ids)


def feed(detok, ids, check_from=0):
    """Feed ids one at a time, as the scheduler does; returns (step at which it stopped, stop string)."""
    for n in range(1, len(ids) + 1):
        hit = detok.update(ids[:n], check_stop=n > check_from)
        if hit is not None:
            return n, hit
    return None, None


@pytest.mark.parametrize("stop, ids, at, text", [
    (["lo w"], [0, 1, 2, 3], 3, "Hel"),            # split over "lo" + " wor"
    (["Hello"], [0, 1, 2], 2, ""),                 # the whole text so far
    (["ld\n"], [0, 1, 2, 3, 4, 8], 5, "Hello wor"),
    (["###"], [5, 6, 8], 2, ""),                   # "#" + "##"
    (["xyz"], [0, 1, 2, 3], None, "Hello world"),  # never there
    (["wor", "lo"], [0, 1, 2], 2, "Hel"),          # the earliest match wins
])
def test_stop_string_found_across_tokens(stop, ids, at, text):
    detok = IncrementalDetokenizer(Pieces(), stop)
    n, hit = feed(detok, ids)
    assert n == at and detok.text == text
    assert (hit is None) == (at is None)


def test_include_stop_str_in_output_keeps_it():
    detok = IncrementalDetokenizer(Pieces(), ["lo w"], include_stop_str_in_output=True)
    assert feed(detok, [0, 1, 2, 3]) == (3, "lo w") and detok.text == "Hello w"


def test_no_match_before_min_tokens():
    """A stop string completed before min_tokens does not count; the text after it still can."""
    detok = IncrementalDetokenizer(Pieces(), ["#"])
    n, hit = feed(detok, [5, 0, 5], check_from=2)
    assert (n, hit) == (3, "#") and detok.text == "#Hel"


def test_streaming_holds_back_a_possible_stop_string():
    """While a stop string may still be forming, its first characters are not released."""
    detok = IncrementalDetokenizer(Pieces(), ["lo w"])          # hold back 3 characters
    released = []
    for n, ids in enumerate(([0], [0, 1], [0, 1, 2]), start=1):
        detok.update(ids)
        released.append(detok.output_text(finished=False))
    assert released == ["", "He", "Hel"]                         # "lo" was never sent, then cut
    assert detok.output_text(finished=True) == "Hel"
    plain = IncrementalDetokenizer(Pieces())
    plain.update([0, 1])
    assert plain.output_text(finished=False) == "Hello"          # no stop strings: nothing held


def test_update_is_idempotent():
    detok = IncrementalDetokenizer(Pieces(), ["zz"])
    detok.update([0, 1])
    detok.update([0, 1])
    assert detok.text == "Hello"
