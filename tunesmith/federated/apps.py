"""Flower's apps around tunesmith's rounds: the `ClientApp` and the `ServerApp` (Message API).

Owns: building the two apps Flower runs, for the simulation (the client data and the server's plan
captured when built) and for the deployment runtime (module-level `client` and `server`, which read
the client's data folder from the SuperNode's node config and the job's `fed.yaml` from the run config).
Does not own: what a round does (`server.run_rounds`, `client.train_local_round`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.federated.client import train_local_round
from tunesmith.federated.messages import read_train_content, update_content


def client_app(data: list[Path] | None, work: Path | None) -> Any:
    """A `ClientApp` whose train handler runs one local round.

    Args:
        data: the simulated clients' datasets, by partition id; None in deployment, where each SuperNode
            names its own (`--node-config 'data="DIR"'`).
        work: where client runs are written; None: the node config's `work-dir`, else beside the data.
    """
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[_clip_when_asked])

    @app.train()
    def train(message: Message, context: Context) -> Message:
        import torch

        torch.set_num_threads(1)  # one core per client (the simulation's backend gives each 1 CPU)
        node = context.node_config
        if data is not None:
            client_data = data[int(node["partition-id"])]
            client_work = (work or client_data.parent) / f"client-{node['partition-id']}"
        else:
            client_data = Path(str(node["data"]))
            client_work = (
                Path(str(node["work-dir"])) if "work-dir" in node else client_data.parent / "federated-client"
            )
        arrays, adapter_config, training = read_train_content(message.content)
        update = train_local_round(arrays, adapter_config, training, client_data, client_work)
        return Message(update_content(update), reply_to=message)

    return app


def _clip_when_asked(message: Any, context: Any, call_next: Any) -> Any:
    """Flower's client-side fixed clipping of the update, when the server's round asks for it (privacy)."""
    from flwr.clientapp.mod import fixedclipping_mod

    from tunesmith.federated.messages import CLIPPING_NORM

    if CLIPPING_NORM in message.content["config"]:
        return fixedclipping_mod(message, context, call_next)
    return call_next(message, context)


def server_app(main: Callable[[Any, Any], None]) -> Any:
    """A `ServerApp` that runs `main(grid, context)`."""
    from flwr.serverapp import ServerApp

    app = ServerApp()
    app.main()(main)
    return app
