"""The base model's mean-pooled hidden states: one row per text, independent of the batch it ran in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.monitor.embed import embed_texts


def test_a_texts_row_does_not_depend_on_its_batch(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    model.eval()
    texts = ["hello", "a much longer question about opening hours and oat milk", "wifi?"]
    together = embed_texts(model, tokenizer, texts)
    alone = np.concatenate([embed_texts(model, tokenizer, [text]) for text in texts])
    assert together.shape == (3, model.config.hidden_size)
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert embed_texts(model, tokenizer, []).shape == (0, model.config.hidden_size)
