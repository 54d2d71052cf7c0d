"""Exports: an adapter taken to where users run models (merged weights, GGUF, Ollama, vLLM), each checked.

The entry point is `tunesmith.export.core.export_model`. This package's `__init__` imports nothing, so
`tunesmith.export.errors` stays importable without torch.
"""
