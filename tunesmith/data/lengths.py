"""Token counts of prepared rows with the target model's tokenizer and chat template. No torch.

Owns: counting every row's rendered tokens and loss-bearing (assistant) tokens fast enough for a
million rows: the tokens the chat template adds around turn contents are measured once per sequence
of roles by rendering a probe conversation, and turn contents are counted word by word from a cache
where that is exact (see `TokenCounter`). Does not own: rendering for training (see `render`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer, pre_tokenizers
from transformers import PreTrainedTokenizerBase

from tunesmith.data.records import Example
from tunesmith.data.render import render_example
from tunesmith.data.rows import PrepRow, RowKind

_PROBE = "x"
_BATCH = 8192
_CACHE_LIMIT = 500_000  # cached pieces per cache (tens of MB); the cache starts over past it
# A space between two printable ASCII characters always starts a GPT-2 pre-token (` ?\p{L}+`, ...): no
# pre-token runs across it, so a text's count is the sum of its pieces' counts (see `TokenCounter`).
_SAFE_SPACE = re.compile(r"(?<=[!-~])(?= [!-~])")
_UNSAFE_SPACE = re.compile(r"[^!-~] | [^!-~]")


class TokenCounter:
    """Counts rows' tokens with one tokenizer, caching what it has counted.

    With a byte-level BPE tokenizer that splits on the GPT-2 pattern (SmolLM2, GPT-2 and the test
    model), no normaliser, and added tokens that do not eat the spaces around them, a text's count is
    the sum of the counts of its pieces cut before each space that sits between two printable ASCII
    characters; pieces repeat (words), so each is tokenised once. Any other tokenizer tokenises whole
    texts. Both give the counts the tokenizer gives the whole text (a test holds them equal).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.backend = tokenizer.backend_tokenizer  # the Rust tokenizer: no Python per token
        self.by_pieces = _is_space_additive(self.backend)
        self.first: dict[str, int] = {}  # a text's first piece → its tokens
        self.spaced: dict[str, int] = {}  # a later piece (without its space) → tokens of " " + piece
        self.probes: dict[tuple[str, ...], tuple[int, int]] = {}

    def count(self, rows: Sequence[PrepRow]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Rendered tokens and loss-bearing tokens per row (documents: every token bears loss)."""
        contents: list[str] = []
        owners: list[int] = []
        learned: list[bool] = []
        overhead = np.zeros(len(rows), dtype=np.int64)
        loss_overhead = np.zeros(len(rows), dtype=np.int64)
        for index, row in enumerate(rows):
            if row.kind is RowKind.text:
                contents.append(row.texts[0])
                owners.append(index)
                learned.append(True)
                continue
            messages = row.messages()
            roles = tuple(message["role"] for message in messages)
            if roles not in self.probes:
                self.probes[roles] = _template_overhead(self.tokenizer, roles)
            overhead[index], loss_overhead[index] = self.probes[roles]
            for message in messages:
                contents.append(message["content"])
                owners.append(index)
                learned.append(message["role"] == "assistant")
        lengths = self.count_texts(contents)
        owner = np.asarray(owners, dtype=np.int64)
        total = np.bincount(owner, weights=lengths, minlength=len(rows)).astype(np.int64) + overhead
        mask = np.asarray(learned, dtype=bool)
        loss = np.bincount(owner[mask], weights=lengths[mask], minlength=len(rows)).astype(np.int64)
        return total, loss + loss_overhead

    def count_texts(self, texts: list[str]) -> npt.NDArray[np.int64]:
        """Tokens of each text alone (no special tokens added)."""
        if not self.by_pieces:
            return self._encode(texts)
        firsts: list[str] = []
        rests: list[str] = []
        per_text: list[int] = []
        for text in texts:
            if text == text.strip(" ") and _is_safe(text):
                pieces = text.split(" ")  # in C: every space starts a piece
            else:
                head, *tail = _SAFE_SPACE.split(text)  # each later part starts with its space
                pieces = [head, *(part[1:] for part in tail)]
            firsts.append(pieces[0])
            rests.extend(pieces[1:])
            per_text.append(len(pieces) - 1)
        counts = self._cached(self.first, firsts, "")
        later = self._cached(self.spaced, rests, " ")
        owner = np.repeat(np.arange(len(texts)), per_text)
        return counts + np.bincount(owner, weights=later, minlength=len(texts)).astype(np.int64)

    def _cached(self, cache: dict[str, int], pieces: list[str], prefix: str) -> npt.NDArray[np.int64]:
        if not all(map(cache.__contains__, pieces)):
            if len(cache) > _CACHE_LIMIT:
                cache.clear()
            missing = [piece for piece in dict.fromkeys(pieces) if piece not in cache]
            found = self._encode([prefix + piece for piece in missing])
            cache.update(zip(missing, found.tolist(), strict=True))
        return np.fromiter(map(cache.__getitem__, pieces), dtype=np.int64, count=len(pieces))

    def _encode(self, texts: list[str]) -> npt.NDArray[np.int64]:
        lengths = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), _BATCH):
            # The _fast variant skips character offsets, which counting does not need.
            encoded = self.backend.encode_batch_fast(texts[start : start + _BATCH], add_special_tokens=False)
            lengths[start : start + len(encoded)] = [len(encoding) for encoding in encoded]
        return lengths


def count_tokens(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[PrepRow]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rendered tokens and loss-bearing tokens per row (documents: every token bears loss)."""
    return TokenCounter(tokenizer).count(rows)


def _is_safe(text: str) -> bool:
    """Whether every space in `text` (neither first nor last) sits between two printable ASCII characters."""
    # Most texts are printable ASCII with single spaces between words: a check in C, no regex.
    if text.isascii() and text.isprintable():
        return "  " not in text
    return _UNSAFE_SPACE.search(text) is None


def _is_space_additive(backend: Tokenizer) -> bool:
    """Whether texts may be counted piece by piece, cut before spaces between printable ASCII characters."""
    pre_tokenizer = backend.pre_tokenizer
    if backend.normalizer is not None or not isinstance(pre_tokenizer, pre_tokenizers.ByteLevel):
        return False
    if not pre_tokenizer.use_regex or pre_tokenizer.add_prefix_space:
        return False
    if backend.truncation is not None or backend.padding is not None:
        return False
    added = backend.get_added_tokens_decoder().values()
    return not any(
        token.lstrip or token.rstrip or token.single_word or " " in token.content for token in added
    )


def _template_overhead(tokenizer: PreTrainedTokenizerBase, roles: tuple[str, ...]) -> tuple[int, int]:
    """Tokens the template adds to a conversation with these roles, in total and inside assistant spans."""
    probe = Example(messages=[{"role": role, "content": _PROBE} for role in roles], source="probe")
    rendered = render_example(tokenizer, probe, max_len=1 << 30)
    probe_tokens = len(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    assistant_turns = sum(1 for role in roles if role == "assistant")
    total = len(rendered.input_ids) - probe_tokens * len(roles)
    return total, rendered.num_loss_tokens - probe_tokens * assistant_turns
