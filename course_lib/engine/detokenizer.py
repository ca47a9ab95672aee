"""Incremental detokenization: the text a sequence's newest tokens add, without re-decoding it all.

A token is not always a whole character: byte-level BPE splits a multi-byte character (an emoji, a
CJK character) across tokens, and decoding half of it gives U+FFFD. So the text is decoded over a
short window of tokens (``prefix_offset`` .. end) and compared with the same window's text without
the new tokens (``prefix_offset`` .. ``read_offset``); the new characters are released only once they
no longer end in U+FFFD. The same trick as vLLM's and TGI's detokenizers, in a few lines.
"""
from __future__ import annotations


class IncrementalDetokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.prefix_offset = 0          # start of the decoding window
        self.read_offset = 0            # tokens before this have been released as text
        self.text = ""                  # everything released so far

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
