"""Serving: an OpenAI-compatible HTTP API over one base model with many LoRA adapters.

`app.create_app(spec)` is the composition root; `inference` is the seam every engine keeps: `engine`
(the embedded one, the default) owns the model and the batching worker thread, `vllm_engine` hands
generation to vLLM on GPUs; `adapters` the LRU of loaded adapters; `schemas` the OpenAI request/response shapes;
`routes/` the thin HTTP layer. Nothing here is created at import time.
"""
