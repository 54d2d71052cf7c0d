"""Serving: an OpenAI-compatible HTTP API over one base model with many LoRA adapters.

`app.create_app(spec)` is the composition root; `engine` owns the model and the batching worker
thread; `adapters` the LRU of loaded adapters; `schemas` the OpenAI request/response shapes;
`routes/` the thin HTTP layer. Nothing here is created at import time.
"""
