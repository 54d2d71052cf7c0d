"""The LoRA layer path tunesmith owns."""
