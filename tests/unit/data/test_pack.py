"""Packing must not change what the model computes: same per-example losses and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.data.pack import pack_batch, pack_rows, share_prefix
from tunesmith.data.render import IGNORE_INDEX, RenderedExample
from tunesmith.models import attention
from tunesmith.models.attention import packed_attention_kwargs, shared_prefix_kwargs, use_packed_attention
from tunesmith.models.loading import load_model
from tunesmith.train.losses import linear_cross_entropy


def test_first_fit_decreasing_fills_rows_without_overflow() -> None:
    lengths = [5, 9, 3, 7, 1, 5]
    rows = pack_rows(lengths, row_len=10)
    assert sorted(index for row in rows for index in row) == list(range(6))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 3  # 30 tokens in rows of 10: FFD finds the perfect packing 9+1, 7+3, 5+5
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([11], row_len=10)


def _examples(seed: int, lengths: list[int], vocab: int) -> list[RenderedExample]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for number, length in enumerate(lengths):
        ids = torch.randint(3, vocab, (length,), generator=generator).tolist()
        learn_from = length // 2  # second half is the "assistant" part
        targets = [
            ids[t + 1] if t + 1 < length and t + 1 >= learn_from else IGNORE_INDEX for t in range(length)
        ]
        examples.append(RenderedExample(input_ids=ids, targets=targets, source=f"x:{number}"))
    return examples


def test_batch_positions_restart_per_example_and_padding_carries_no_loss() -> None:
    examples = _examples(0, [4, 3, 6], vocab=50)
    batch = pack_batch(examples, row_len=8, pad_id=0)
    assert batch.input_ids.shape == (2, 7)  # rows [6] and [4, 3]; padded to the longest row only
    assert batch.position_ids[1].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 0]
    assert batch.targets[0, 6].item() == IGNORE_INDEX
    assert batch.num_tokens == 13
    assert batch.row_tokens == [6, 7] and batch.width(slice(0, 1)) == 6  # a pass of row 0 needs no padding
    assert batch.num_loss_tokens == sum(e.num_loss_tokens for e in examples)


@pytest.mark.parametrize("attention", ["sdpa", "packed"])
def test_packed_rows_give_the_same_losses_and_gradients_as_one_by_one(
    tiny_model_dir: Path, attention: str
) -> None:
    """Both attention paths: SDPA with transformers' block-diagonal mask, and per-example packed attention."""
    torch.manual_seed(0)
    model = load_model(str(tiny_model_dir)).eval()
    if attention == "packed":
        use_packed_attention(model)
    vocab = model.config.vocab_size
    examples = _examples(1, [12, 7, 20, 5, 9], vocab)
    weight = model.get_output_embeddings().weight
    decoder = model.get_decoder()

    def loss_and_grads(batch) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        boundaries = packed_attention_kwargs(batch.position_ids) if attention == "packed" else {}
        hidden = decoder(
            input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, **boundaries
        ).last_hidden_state
        loss, _ = linear_cross_entropy(hidden, weight, batch.targets)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    separate_loss, separate_grads = 0.0, {}
    for example in examples:
        loss, grads = loss_and_grads(pack_batch([example], row_len=64, pad_id=0))
        separate_loss += loss
        for name, grad in grads.items():
            separate_grads[name] = separate_grads.get(name, 0) + grad
    packed = pack_batch(examples, row_len=32, pad_id=0)
    assert packed.input_ids.shape[0] < len(examples)  # really packed several per row
    packed_loss, packed_grads = loss_and_grads(packed)
    assert packed_loss == pytest.approx(separate_loss, rel=1e-5)
    for name, grad in separate_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("explicit_max_len", [512, 8])
def test_packed_attention_matches_transformers_masked_sdpa_on_padded_rows(
    tiny_model_dir: Path, explicit_max_len: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several rows with padding tails: the boundaries index the rows laid end to end.

    With the explicit-attention limit at 8 tokens, longer examples take SDPA and shorter ones the
    explicit path within the same batch.
    """
    monkeypatch.setattr(attention, "EXPLICIT_MAX_LEN", explicit_max_len)
    model = load_model(str(tiny_model_dir)).eval()
    examples = _examples(2, [12, 7, 20, 5, 9, 3], model.config.vocab_size)
    batch = pack_batch(examples, row_len=22, pad_id=0)
    assert batch.input_ids.shape[0] >= 3 and (batch.position_ids[:, -1] != 0).any()  # rows end in padding
    boundaries = packed_attention_kwargs(batch.position_ids)
    assert boundaries["cu_seq_lens_q"][-1] == batch.input_ids.numel()
    with torch.no_grad():
        # use_cache=False: with a cache, transformers does not read position ids as packing.
        reference = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
        use_packed_attention(model)
        packed = model(
            input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, **boundaries
        ).logits
    real = batch.targets != IGNORE_INDEX
    torch.testing.assert_close(packed[real], reference[real], rtol=1e-4, atol=1e-5)


def _with_opening(examples: list[RenderedExample], opening: list[int]) -> list[RenderedExample]:
    """The examples with `opening` in front (a shared system prompt): no loss on it, none moved."""
    return [
        RenderedExample(
            input_ids=opening + example.input_ids,
            targets=[IGNORE_INDEX] * len(opening) + example.targets,
            source=example.source,
        )
        for example in examples
    ]


def test_share_prefix_keeps_the_loss_free_common_opening_once() -> None:
    opening = list(range(3, 15))  # 12 tokens
    examples = _with_opening(_examples(3, [20, 18, 26], vocab=50), opening)
    batch = pack_batch(examples, row_len=200, pad_id=0)
    row = share_prefix(*batch.end_to_end(slice(None)))
    assert row.prefix >= 12  # the opening, and any tokens the examples happen to share after it
    # Packing orders the examples longest first; each keeps its tokens after the prefix.
    rests = sorted((len(example.input_ids) - row.prefix for example in examples), reverse=True)
    assert row.input_ids.shape == (1, row.prefix + sum(rests))
    assert row.bounds == [
        0,
        row.prefix,
        row.prefix + rests[0],
        row.prefix + rests[0] + rests[1],
        row.input_ids.shape[1],
    ]
    assert row.input_ids[0, :12].tolist() == opening
    assert row.position_ids[0, row.prefix].item() == row.prefix  # each example's rest keeps its positions
    assert (row.targets != IGNORE_INDEX).sum().item() == batch.num_loss_tokens  # every loss token kept once

    # A loss inside the opening ends the shared part before it: that target belongs to each example.
    examples[1].targets[6] = examples[1].input_ids[7]
    shorter = share_prefix(*pack_batch(examples, row_len=200, pad_id=0).end_to_end(slice(None)))
    assert shorter.prefix == 0  # 6 tokens: under MIN_SHARED_PREFIX, not worth sharing
    assert shorter.bounds == [0, 38, 70, 100]  # each example whole, longest first
    single = pack_batch(examples[:1], row_len=200, pad_id=0)
    assert share_prefix(*single.end_to_end(slice(None))).prefix == 0  # one example: nothing to share


@pytest.mark.parametrize("explicit_max_len", [512, 16])
def test_a_shared_prefix_gives_the_same_losses_and_gradients(
    tiny_model_dir: Path, explicit_max_len: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the explicit-attention limit at 16 tokens, the longer examples take SDPA with a prefix mask."""
    monkeypatch.setattr(attention, "EXPLICIT_MAX_LEN", explicit_max_len)
    torch.manual_seed(0)
    model = load_model(str(tiny_model_dir)).eval()
    use_packed_attention(model)
    weight, decoder = model.get_output_embeddings().weight, model.get_decoder()
    opening = torch.randint(3, model.config.vocab_size, (14,)).tolist()
    examples = _with_opening(_examples(4, [12, 7, 30, 5, 20], model.config.vocab_size), opening)
    batch = pack_batch(examples, row_len=64, pad_id=0)

    def loss_and_grads(ids, positions, targets, boundaries) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        hidden = decoder(
            input_ids=ids, position_ids=positions, use_cache=False, **boundaries
        ).last_hidden_state
        loss, _ = linear_cross_entropy(hidden, weight, targets)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ids, positions, targets = batch.end_to_end(slice(None))
    reference_loss, reference_grads = loss_and_grads(
        ids, positions, targets, packed_attention_kwargs(positions)
    )
    row = share_prefix(ids, positions, targets)
    assert row.prefix >= 14 and row.input_ids.shape[1] == ids.shape[1] - (len(examples) - 1) * row.prefix
    loss, grads = loss_and_grads(row.input_ids, row.position_ids, row.targets, shared_prefix_kwargs(row))
    assert loss == pytest.approx(reference_loss, rel=1e-5)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
