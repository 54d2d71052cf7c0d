"""The LoRA layer path tunesmith owns: which forward a LoRA layer runs in training, evaluation and serving.

peft creates, saves and loads adapters (the on-disk format is peft's; see `tunesmith.models.adapters`).
Once a model's adapters exist, `use_lora_forwards(model, fused=..., fast_dropout=...)` installs one
forward on each peft `lora.Linear`, and that forward picks its path at every call by the layer's mode
(`forward.py`), so a model is installed once and then trains, validates, evaluates and generates.
Serving many adapters at once replaces the adapted layers by stacked ones instead (`stacked.py`).

Which forward runs where; a call takes the first row it matches. "Plain" is `is_plain_lora`: plain LoRA
(no DoRA or other peft variant, no LoRA bias) on an `nn.Linear` base that is not fan-in-fan-out.

  call                                  module                              forward (module)
  ------------------------------------  ----------------------------------  ----------------------------------
  training, gradients on, fused=True,   peft `lora.Linear`: one active,     `FusedLoraLinear` (fused)
    CPU or CUDA, no extra arguments       plain adapter; frozen base
  the same                              SwiGLU MLP over such a `down_proj`  `FusedSwiGLULora` (fused)
  the same                              Llama-style RMSNorm, frozen weight  `_RMSNorm` (norm)
  not training, bf16/fp16 compute       peft `lora.Linear`: adapters in     `forward_rounded_once` (rounding)
    (autocast's dtype, else the base's)   use plain; unmerged, enabled
  anything else: training unfused,      peft `lora.Linear`                  peft's `lora.Linear.forward`, its
    fp32, DoRA and variants, merged                                           dropout `FastDropout` where
                                                                              fast_dropout=True (dropout)
  anything else                         MLP, RMSNorm                        transformers' own forward
  serving many adapters per batch       `StackedLoRALinear`, in place of    base + each row's slot delta; in
    (`tunesmith.serve.adapters`)          an adapted `nn.Linear`              bf16/fp16 `linear_with_delta`
                                                                              (stacked, rounding)

Why each path:
- fused training: peft casts to fp32 and back, applies dropout and scales and adds in separate passes,
  and keeps the dropped input and mask for backward; one function computes it in the compute dtype,
  keeps the mask's seed, not the mask, and (for the MLP) keeps gate and up only.
- rounded once: peft rounds the base output to bf16 before adding the delta, which loses deltas under
  half a bf16 step of the output; adding the delta inside the base matmul's sum keeps them.
- peft's: in fp32 the second rounding is at 2⁻²⁴ and changes nothing a user could see; variants are
  peft's to get right.
- stacked: one base model serves many adapters, each batch row through its own; it rounds as
  evaluation does, so a served adapter answers as it was evaluated.

Modules: `forward.py` (install and dispatch, `is_plain_lora`, the compute dtype), `fused.py` (the
fused autograd functions), `norm.py` (fused RMSNorm), `dropout.py` (`FastDropout` and its mask),
`kernels.py` (the CPU kernel of the mask), `rounding.py` (single rounding), `stacked.py` (serving).
`fused=True` is chosen with the step layout (`tunesmith.train.plan.fused_layer_choices`);
`fast_dropout=True` on CPUs. Measured figures: benchmarks/RESULTS.md, "LoRA layers".
"""

from tunesmith.lora.forward import LoraForwards, use_lora_forwards

__all__ = ["LoraForwards", "use_lora_forwards"]
