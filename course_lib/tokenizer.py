"""A thin wrapper over a Hugging Face tokenizer: text <-> token ids, with the chat template."""
from __future__ import annotations

from pathlib import Path


class Tokenizer:
    def __init__(self, folder: str | Path):
        from transformers import AutoTokenizer
        self.hf = AutoTokenizer.from_pretrained(str(folder))
        eos = self.hf.eos_token_id
        self.eos_token_ids: tuple[int, ...] = () if eos is None else (eos,)

    @classmethod
    def from_model(cls, name_or_path: str) -> "Tokenizer":
        from .models.registry import resolve_model
        return cls(resolve_model(name_or_path).folder)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str, chat: bool = False, system: str | None = None) -> list[int]:
        """Token ids for ``text``; with ``chat=True`` wrapped as one user turn plus the assistant cue."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"prompt must be a non-empty string, got {text!r}")
        if not chat:
            return self.hf.encode(text, add_special_tokens=False)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}]
        return self.chat_ids(messages)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        out = self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if hasattr(out, "keys") else out   # transformers 5 returns a BatchEncoding
        return list(ids)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, ids) -> list[str]:
        """The string piece of each id (for showing how text was split)."""
        return self.hf.convert_ids_to_tokens(list(ids))
