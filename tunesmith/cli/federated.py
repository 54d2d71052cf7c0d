"""`tunesmith federated`: fine-tune one LoRA adapter across data owners on Flower (simulate, server, client)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tunesmith.cli.common import UsageError, console, fail, print_json

app = typer.Typer(
    help="Federated fine-tuning on Flower: clients train a shared LoRA adapter; only adapter weights travel."
)

_Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_Config = Annotated[
    Path, typer.Option("--config", "-c", help="The federated job (fed.yaml).", show_default=False)
]


def _registry() -> Any:
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    return Registry(default_database_url()).connect()


@app.command("simulate")
def simulate(config: _Config, json_output: _Json = False) -> None:
    """Run the job's clients and server on this machine with Flower's simulation engine (Ray).

    Each client holds its own dataset (`client_data`) or a share of one (`partition`: iid, label, column,
    dirichlet); each round trains the sampled clients from the global adapter and aggregates their adapters.
    Every round is a registry run whose adapter is the next version of `name`. Defaults are the measured
    ones (benchmarks/RESULTS.md): the server steps `server_lr` 4 times the clients' average update (1 is
    plain FedAvg), clients train at `lr` 1e-3; `tunesmith config reference` lists every key.

    Example:
      tunesmith federated simulate --config fed.yaml
    """
    from tunesmith.config import load_federated_spec
    from tunesmith.federated.record import RoundSummary
    from tunesmith.federated.server import FederationError
    from tunesmith.federated.simulate import simulate as run_simulation

    spec = load_federated_spec(config)
    if spec.num_clients() is None:
        raise UsageError(f"{config}: a simulation needs client_data or partition")
    with Progress(
        TextColumn("[bold]federated rounds"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, disable=json_output,
    ) as progress:  # fmt: skip
        task = progress.add_task("", total=spec.rounds)

        def advance(summary: RoundSummary) -> None:
            progress.update(task, advance=1, description=f"client loss {summary.train_loss:.4f}")

        try:
            result = run_simulation(spec, _registry(), on_round=advance)
        except FederationError as error:
            fail(str(error))
    _show(result.to_dict(), json_output)


@app.command("server")
def server(
    config: _Config,
    host: Annotated[
        str, typer.Option("--host", help="Address the SuperLink listens on (0.0.0.0: all).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="The SuperLink's port (its Fleet, Control and Runtime APIs).")
    ] = 9092,
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS (default on loopback only).")] = False,
    ssl_certfile: Annotated[
        Path | None, typer.Option("--ssl-certfile", help="TLS: the server certificate.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option("--ssl-keyfile", help="TLS: its private key.")] = None,
    ssl_ca_certfile: Annotated[
        Path | None, typer.Option("--ssl-ca-certfile", help="TLS: the CA certificate.")
    ] = None,
    auth_public_keys: Annotated[
        Path | None,
        typer.Option(
            "--auth-list-public-keys",
            help="CSV of the client public keys allowed (Flower's SuperNode authentication; needs TLS).",
        ),
    ] = None,
    json_output: _Json = False,
) -> None:
    """Start a Flower SuperLink and run the job's rounds with the clients that join it.

    Clients join with `tunesmith federated client --data DIR --server HOST:PORT`; each round waits for
    `min_clients`. Only adapter weights and counts travel. On loopback the link is unencrypted unless TLS
    files are given; elsewhere TLS is required unless --insecure.

    Example:
      tunesmith federated server --config fed.yaml --port 9092
    """
    from tunesmith.config import load_federated_spec
    from tunesmith.federated.deploy import Transport, serve
    from tunesmith.federated.server import FederationError
    from tunesmith.federated.simulate import job_folder

    spec = load_federated_spec(config)
    plain = insecure or (ssl_certfile is None and host in ("127.0.0.1", "localhost", "::1"))
    transport = Transport(plain, ssl_certfile, ssl_keyfile, ssl_ca_certfile, auth_public_keys)
    try:
        result = serve(config, spec, job_folder(spec), host, port, transport)
    except FederationError as error:
        fail(str(error))
    _show(result, json_output)


@app.command("client")
def client(
    data: Annotated[
        Path,
        typer.Option("--data", help="This client's data: a file or prepared folder.", show_default=False),
    ],
    server_address: Annotated[
        str, typer.Option("--server", help="The SuperLink, HOST:PORT.", show_default=False)
    ],
    port: Annotated[int, typer.Option("--port", help="This SuperNode's local ClientApp API port.")] = 9094,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Where local runs go (default: beside the data).")
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS (default on loopback only).")] = False,
    root_certificates: Annotated[
        Path | None,
        typer.Option("--root-certificates", help="TLS: the CA certificate the server's is checked against."),
    ] = None,
    auth_private_key: Annotated[
        Path | None,
        typer.Option("--auth-private-key", help="SuperNode authentication: this client's private key."),
    ] = None,
    auth_public_key: Annotated[
        Path | None, typer.Option("--auth-public-key", help="SuperNode authentication: its public key.")
    ] = None,
) -> None:
    """Join a federated job as a data owner: train the global adapter on --data when the server asks.

    Runs a Flower SuperNode until the server's job ends (or Ctrl-C). Examples never leave this machine: the
    server receives the trained adapter's weights, the example count, the loss and the data's content hash.

    Example:
      tunesmith federated client --data ./branch-a --server 10.0.0.5:9092 --root-certificates ca.crt
    """
    from tunesmith.federated.deploy import Transport, is_loopback, run_client

    plain = insecure or (root_certificates is None and is_loopback(server_address))
    transport = Transport(plain, ssl_ca_certfile=root_certificates, auth_private_key=auth_private_key,
                          auth_public_key=auth_public_key)  # fmt: skip
    work = work_dir or (data.parent if data.is_file() else data) / "federated-client"
    run_client(server_address, data, work, port, transport)


def _show(result: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(result)
        return
    table = Table(
        title=f"{result['name']}: {result['clients']} clients, final adapter {result['final_adapter'] or result['final_adapter_dir']}"
    )
    for column in ("round", "adapter", "clients", "loss", "error", "fedavg error", "traffic MB"):
        table.add_column(column, justify="right", no_wrap=True)
    for summary in result["rounds"]:
        table.add_row(
            str(summary["round"]), summary["adapter"] or "-", str(len(summary["clients"])),
            f"{summary['train_loss']:.4f}", f"{summary['error']:.2e}", f"{summary['fedavg_error']:.2e}",
            f"{summary['traffic_bytes'] / 1e6:.3f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"folder: {result['out']}", highlight=False)
