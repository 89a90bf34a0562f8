"""A tokenizer as GGUF stores it, built from ``tokenizer.json`` and back.

GGUF keeps a BPE tokenizer as a token list padded to the model's vocab size, a type
per token (normal, control, user-defined, unused padding), the merges, and the
special ids. Both directions are here so that GGUF → HF → GGUF keeps the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gguf import TokenType
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from ..errors import CheckpointError
from .checkpoint import Checkpoint
from .synthetic import QWEN2_SPLIT


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    eos_id: int | None
    pad_id: int | None
    bos_id: int | None
    chat_template: str | None


def _merge_text(merge: Any) -> str:
    return merge if isinstance(merge, str) else " ".join(merge)


def vocab_from_checkpoint(checkpoint: Checkpoint) -> GGUFVocab:
    """The GGUF tokenizer of a checkpoint, padded to ``config.vocab_size``."""
    model = checkpoint.tokenizer.get("model", {})
    if model.get("type") != "BPE":
        raise CheckpointError(f"{checkpoint.folder}: only byte-level BPE tokenizers are supported")
    by_id: dict[int, tuple[str, int]] = {i: (text, TokenType.NORMAL) for text, i in model["vocab"].items()}
    for added in checkpoint.tokenizer.get("added_tokens", []):
        kind = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
        by_id[int(added["id"])] = (added["content"], kind)
    size = max(checkpoint.config.vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        text, kind = by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    config = checkpoint.config.raw
    eos = checkpoint.token_id("eos_token")
    return GGUFVocab(
        tokens=tokens,
        types=types,
        merges=[_merge_text(m) for m in model.get("merges", [])],
        eos_id=eos if eos is not None else config.get("eos_token_id"),
        pad_id=checkpoint.token_id("pad_token"),
        bos_id=config.get("bos_token_id"),
        chat_template=checkpoint.tokenizer_config.get("chat_template"),
    )


def tokenizer_from_vocab(vocab: GGUFVocab) -> Tokenizer:
    """A Hugging Face ``tokenizers`` BPE with Qwen2's pre-tokenizer, from a GGUF vocabulary."""
    normal = {text: i for i, (text, kind) in enumerate(zip(vocab.tokens, vocab.types, strict=True)) if kind == 1}
    merges = [tuple(m.split(" ", 1)) for m in vocab.merges]
    tokenizer = Tokenizer(models.BPE(vocab=normal, merges=merges, ignore_merges=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    for token_id, (text, kind) in enumerate(zip(vocab.tokens, vocab.types, strict=True)):
        if kind not in (TokenType.CONTROL, TokenType.USER_DEFINED):
            continue
        special = kind == TokenType.CONTROL
        added = AddedToken(text, special=special, normalized=False)
        if special:
            tokenizer.add_special_tokens([added])
        else:
            tokenizer.add_tokens([added])
        if tokenizer.token_to_id(text) != token_id:
            raise CheckpointError(f"added token {text!r} would get id {tokenizer.token_to_id(text)}, not {token_id}")
    return tokenizer
