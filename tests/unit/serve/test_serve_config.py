from __future__ import annotations

import pytest

from tests.conftest import REPO
from tunesmith.config import ConfigError, ServeSpec, build_spec, load_config_file


def test_shipped_serve_config_loads_and_flags_override_it() -> None:
    section = load_config_file(REPO / "configs" / "serve.yaml").serve
    spec = build_spec(ServeSpec, section, {"port": 9001, "auth": None, "adapters": {"acme": "runs/x"}})
    assert (spec.port, spec.auth, spec.max_batch_size, spec.adapters) == (9001, True, 16, {"acme": "runs/x"})


def test_bad_serve_values_name_their_keys() -> None:
    with pytest.raises(ConfigError, match="serve.max_batch_size"):
        build_spec(ServeSpec, {"max_batch_size": 0}, {})
    with pytest.raises(ConfigError, match="serve.colour"):
        build_spec(ServeSpec, {"colour": "red"}, {})
