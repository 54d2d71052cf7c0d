"""Loss functions: pure tensor code, no model or config knowledge.

`linear_cross_entropy` computes the language-model loss from final hidden states and the output
embedding without ever materialising the full `(tokens, vocab)` logits: it runs only on the
loss-bearing positions, in chunks, and computes the gradient of each chunk during the forward pass
(so backward is two multiplications by a scalar, and nothing of vocabulary size is kept). Logits and
softmax are held in the compute dtype (softmax and log-softmax compute in fp32 internally). Under
bf16, a loss without gradients (validation) is each token's log-softmax rounded to bf16 (relative
error <= 2**-8); with gradients it is read off the stored softmax (absolute error <= 2**-8 per token,
which saves a vocabulary-sized pass). Both are finer than the error the bf16 logits already carry.

`sequence_log_probs` is its sibling for preference objectives: each sequence's summed log-probability of
its targets, from the same hidden states and embedding, with the same chunking and the gradient of each
token's log-probability with respect to its hidden state taken in the forward pass. The output
embedding must be frozen there (LoRA), which is what makes that gradient a per-token vector.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.data.render import IGNORE_INDEX


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,  # (N, H) loss-bearing positions only
        weight: torch.Tensor,  # (V, H)
        targets: torch.Tensor,  # (N,)
        chunk_size: int,
        compute_dtype: torch.dtype,
    ) -> torch.Tensor:
        needs_weight_grad = ctx.needs_input_grad[1]
        weight_c = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_weight_grad else None
        for start in range(0, hidden.shape[0], chunk_size):
            chunk = hidden[start : start + chunk_size].to(compute_dtype)  # (C, H)
            chunk_targets = targets[start : start + chunk_size]
            logits = chunk @ weight_c.T  # (C, V)
            # Each softmax below is one fused pass that computes in fp32 and writes the compute dtype:
            # an fp32 copy of the logits and separate logsumexp/sub/exp passes cost several times more
            # on a CPU (benchmarks/RESULTS.md).
            if grad_hidden is None and grad_weight is None:
                total -= _target_log_probs(logits, chunk_targets).sum()
                continue
            grad_logits = torch.softmax(logits, dim=-1)  # d(loss)/d(logits) = softmax - one_hot
            rows = torch.arange(chunk.shape[0], device=chunk.device)
            # The loss from the stored softmax, without a second vocabulary-sized pass: log-sum-exp is
            # top - log p(top), and p(top) >= 1/V never underflows (a target's own p can). Under bf16
            # p(top) is rounded, so the loss is within 2**-8 of exact; no branch, so no device sync.
            top, top_index = logits.max(dim=-1)
            log_norm = top.float() - grad_logits[rows, top_index].float().log()
            total += (log_norm - logits[rows, chunk_targets].float()).sum()
            del logits
            grad_logits[rows, chunk_targets] -= 1.0
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_size] = (grad_logits @ weight_c).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ chunk).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_grad = grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None
        weight_grad = grad_weight * grad_output if grad_weight is not None else None
        return hidden_grad, weight_grad, None, None, None


def _target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 log-probabilities of `targets` under `logits` (C, V); computed in fp32, stored in logits' dtype."""
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1).float()


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int = 1024,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over positions whose target is not IGNORE_INDEX.

    Args:
        hidden: final hidden states, `(B, T, H)` or `(N, H)`.
        weight: output embedding `(V, H)`.
        targets: `(B, T)` or `(N,)` token ids, IGNORE_INDEX where no loss is taken.
        chunk_size: positions per logits chunk; bounds the `(chunk, V)` buffer.
        compute_dtype: matmul dtype (bf16 for speed); defaults to `hidden`'s dtype.

    Returns:
        The summed loss (fp32 scalar) and the number of loss-bearing positions.
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    keep = flat_targets != IGNORE_INDEX
    selected_hidden = flat_hidden[keep]
    selected_targets = flat_targets[keep]
    dtype = compute_dtype or hidden.dtype
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        loss: torch.Tensor = _LinearCrossEntropy.apply(  # type: ignore[no-untyped-call]
            selected_hidden, weight, selected_targets, chunk_size, dtype
        )
    return loss, int(selected_targets.numel())


class _LinearTokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,  # (N, H) loss-bearing positions only
        weight: torch.Tensor,  # (V, H), frozen
        targets: torch.Tensor,  # (N,)
        chunk_size: int,
        compute_dtype: torch.dtype,
    ) -> torch.Tensor:
        if ctx.needs_input_grad[1]:
            raise ValueError("sequence_log_probs needs a frozen output embedding (train LoRA adapters)")
        weight_c = weight.to(compute_dtype)
        log_probs = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, hidden.shape[0], chunk_size):
            chunk = hidden[start : start + chunk_size].to(compute_dtype)  # (C, H)
            chunk_targets = targets[start : start + chunk_size]
            logits = chunk @ weight_c.T  # (C, V)
            # One formula with and without gradients, so that the reference (computed without) and the
            # policy at step 0 (with) agree to the bit: log-sum-exp read off the stored softmax, as in
            # _LinearCrossEntropy, and the target's logit in fp32.
            probabilities = torch.softmax(logits, dim=-1)
            rows = torch.arange(chunk.shape[0], device=chunk.device)
            top, top_index = logits.max(dim=-1)
            log_norm = top.float() - probabilities[rows, top_index].float().log()
            log_probs[start : start + chunk_size] = logits[rows, chunk_targets].float() - log_norm
            del logits
            if grad_hidden is None:
                continue
            # d log p(target) / d hidden = W[target] - softmax @ W
            grad_hidden[start : start + chunk_size] = (weight_c[chunk_targets] - probabilities @ weight_c).to(
                hidden.dtype
            )
        ctx.save_for_backward(grad_hidden)
        return log_probs

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad_hidden,) = ctx.saved_tensors
        hidden_grad = (
            grad_hidden * grad_output[:, None].to(grad_hidden.dtype) if grad_hidden is not None else None
        )
        return hidden_grad, None, None, None, None


def sequence_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    sequence_ids: torch.Tensor,
    num_sequences: int,
    *,
    chunk_size: int = 1024,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Each sequence's summed log-probability of its targets (positions not IGNORE_INDEX).

    Args:
        hidden: final hidden states, `(B, T, H)` or `(N, H)`.
        weight: output embedding `(V, H)`; frozen.
        targets: `(B, T)` or `(N,)` token ids, IGNORE_INDEX where no loss is taken.
        sequence_ids: `(L,)` the sequence of each loss-bearing position, in the order they appear in
            `targets` read row by row.
        num_sequences: S, the number of sequences.
        chunk_size: positions per logits chunk; bounds the `(chunk, V)` buffer.
        compute_dtype: matmul dtype (bf16 for speed); defaults to `hidden`'s dtype.

    Returns:
        `(S,)` fp32 sums of log-probabilities, differentiable with respect to `hidden`.
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    keep = flat_targets != IGNORE_INDEX
    dtype = compute_dtype or hidden.dtype
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        token_log_probs: torch.Tensor = _LinearTokenLogProbs.apply(  # type: ignore[no-untyped-call]
            flat_hidden[keep], weight, flat_targets[keep], chunk_size, dtype
        )
    sums = torch.zeros(num_sequences, dtype=torch.float32, device=hidden.device)
    return sums.index_add(0, sequence_ids.to(hidden.device), token_log_probs)
