"""Incremental detokenization: the text a sequence's newest tokens add, without re-decoding it all,
and stop strings found in it (Day 06).

A token is not always a whole character: byte-level BPE splits a multi-byte character (an emoji, a
CJK character) across tokens, and decoding half of it gives U+FFFD. So the text is decoded over a
short window of tokens (``prefix_offset`` .. end) and compared with the same window's text without
the new tokens (``prefix_offset`` .. ``read_offset``); the new characters are released only once they
no longer end in U+FFFD. The same trick as vLLM's and TGI's detokenizers, in a few lines.

Stop strings live in the text, not in the tokens: "\\n\\n" may arrive as "\\n" + "\\n" or inside one
token with more text after it. So each new piece of text is searched, together with the last
``len(longest stop) - 1`` characters before it (a stop string split across tokens). On a match the
text is cut before the stop string (after it with ``include_stop_str_in_output``) and nothing more
is decoded. While streaming, those last ``len(longest stop) - 1`` characters are held back
(``output_text``), so a client never receives the start of a stop string that is then cut.
"""
from __future__ import annotations


class IncrementalDetokenizer:
    def __init__(self, tokenizer, stop=(), include_stop_str_in_output: bool = False):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.include_stop = include_stop_str_in_output
        longest = max((len(s) for s in self.stop), default=0)
        self.overlap = max(0, longest - 1)             # chars before the new text a match may start in
        self.hold_back = 0 if include_stop_str_in_output else self.overlap
        self.prefix_offset = 0          # start of the decoding window
        self.read_offset = 0            # tokens before this have been released as text
        self.num_ids = 0                # ids seen by update
        self.text = ""                  # everything decoded so far (cut at a stop string)
        self.stopped: str | None = None

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else ""

    def step(self, ids: list[int], final: bool = False) -> str:
        """New text for the output ids ``ids`` (all of them, the new ones at the end)."""
        before = self._decode(ids[self.prefix_offset:self.read_offset])
        after = self._decode(ids[self.prefix_offset:])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""                   # a character still incomplete: wait for its next byte
        new = after[len(before):]
        self.prefix_offset, self.read_offset = self.read_offset, len(ids)
        self.text += new
        return new

    def update(self, ids: list[int], final: bool = False, check_stop: bool = True) -> str | None:
        """Decode what ``ids`` added since the last call (a no-op if nothing); returns the stop
        string that the new text completes, if ``check_stop`` and one does (the text is cut)."""
        if self.stopped is not None or (len(ids) == self.num_ids and not (final and self.read_offset < len(ids))):
            return None
        self.num_ids = len(ids)
        new = self.step(ids, final)
        if not (new and check_stop and self.stop):
            return None
        start = max(0, len(self.text) - len(new) - self.overlap)
        hits = [(i, s) for s in self.stop if (i := self.text.find(s, start)) != -1]
        if not hits:
            return None
        i, s = min(hits)                                   # the earliest, as a reader would see it
        self.text = self.text[:i + len(s)] if self.include_stop else self.text[:i]
        self.stopped = s
        return s

    def output_text(self, finished: bool) -> str:
        """The text a client may see now: all of it once finished, else without the held-back tail."""
        if finished or not self.hold_back or self.stopped is not None:
            return self.text
        return self.text[:max(0, len(self.text) - self.hold_back)]
