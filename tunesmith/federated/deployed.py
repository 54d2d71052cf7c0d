"""The Flower components of the deployment runtime: `server` (ServerApp) and `client` (ClientApp).

Owns: the module attributes the generated Flower app names (`tunesmith.federated.deployed:server` and
`:client`, see `deploy.write_app`). The ServerApp reads the job from the run config's `config` (the path
of `fed.yaml`) and records rounds in the registry of its environment (TUNESMITH_HOME,
TUNESMITH_DATABASE_URL); each ClientApp reads its data folder from its SuperNode's node config.
Importing this module imports flwr: only Flower's runtime does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.federated.apps import client_app, server_app


def _main(grid: Any, context: Any) -> None:
    from tunesmith.config import default_database_url, load_federated_spec
    from tunesmith.federated.server import run_rounds
    from tunesmith.federated.simulate import federation_plan, finish_job, job_folder, start_job
    from tunesmith.registry.store import Registry

    spec = load_federated_spec(Path(str(context.run_config["config"])))
    out = job_folder(spec)
    start = start_job(spec, out, Registry(default_database_url()).connect())
    plan = federation_plan(spec, min_clients=spec.min_clients)
    summaries = run_rounds(grid, plan, start.arrays, start.adapter_config, start.recorder)
    finish_job(spec, out, len({client.node_id for s in summaries for client in s.clients}), summaries)


server = server_app(_main)
client = client_app(None, None)
