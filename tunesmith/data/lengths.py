"""Token counts of prepared rows with the target model's tokenizer and chat template. No torch.

Owns: counting every row's rendered tokens and loss-bearing (assistant) tokens fast enough for a
million rows: turn contents are tokenised in batches, and the tokens the chat template adds around
them are measured once per sequence of roles by rendering a probe conversation. Does not own:
rendering for training (see `render`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from transformers import PreTrainedTokenizerBase

from tunesmith.data.records import Example
from tunesmith.data.render import render_example
from tunesmith.data.rows import PrepRow, RowKind

_PROBE = "x"
_BATCH = 8192


def count_tokens(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[PrepRow]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rendered tokens and loss-bearing tokens per row (documents: every token bears loss)."""
    contents: list[str] = []
    owners: list[int] = []
    learned: list[bool] = []
    overhead = np.zeros(len(rows), dtype=np.int64)
    loss_overhead = np.zeros(len(rows), dtype=np.int64)
    probes: dict[tuple[str, ...], tuple[int, int]] = {}
    for index, row in enumerate(rows):
        if row.kind is RowKind.text:
            contents.append(row.texts[0])
            owners.append(index)
            learned.append(True)
            continue
        messages = row.messages()
        roles = tuple(message["role"] for message in messages)
        if roles not in probes:
            probes[roles] = _template_overhead(tokenizer, roles)
        overhead[index], loss_overhead[index] = probes[roles]
        for message in messages:
            contents.append(message["content"])
            owners.append(index)
            learned.append(message["role"] == "assistant")
    lengths = np.zeros(len(contents), dtype=np.int64)
    backend = tokenizer.backend_tokenizer  # the Rust tokenizer: batches run in parallel, no Python per token
    for start in range(0, len(contents), _BATCH):
        # The _fast variant skips character offsets, which counting does not need.
        encoded = backend.encode_batch_fast(contents[start : start + _BATCH], add_special_tokens=False)
        lengths[start : start + len(encoded)] = [len(encoding) for encoding in encoded]
    owner = np.asarray(owners, dtype=np.int64)
    total = np.bincount(owner, weights=lengths, minlength=len(rows)).astype(np.int64) + overhead
    mask = np.asarray(learned, dtype=bool)
    loss = np.bincount(owner[mask], weights=lengths[mask], minlength=len(rows)).astype(np.int64)
    return total, loss + loss_overhead


def _template_overhead(tokenizer: PreTrainedTokenizerBase, roles: tuple[str, ...]) -> tuple[int, int]:
    """Tokens the template adds to a conversation with these roles, in total and inside assistant spans."""
    probe = Example(messages=[{"role": role, "content": _PROBE} for role in roles], source="probe")
    rendered = render_example(tokenizer, probe, max_len=1 << 30)
    probe_tokens = len(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    assistant_turns = sum(1 for role in roles if role == "assistant")
    total = len(rendered.input_ids) - probe_tokens * len(roles)
    return total, rendered.num_loss_tokens - probe_tokens * assistant_turns
