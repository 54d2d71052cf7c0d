"""Federated fine-tuning on Flower: several data owners improve one LoRA adapter without pooling data.

Modules, in the order a round uses them: `partition` (a simulated client's share of one dataset),
`client` (a local round: `train_sft` from the global adapter), `messages` (what travels: adapter tensors
and counts, never examples), `aggregate` (FedAvg of A and B, or the exact average of B·A), `server` (the
round loop on Flower's `Grid`), `record` (each round a registry run and adapter version, with an audit
record), `privacy` (optional clipping noise and epsilon), `apps` (Flower's ClientApp and ServerApp),
`simulate` and `deploy` (the two runtimes; `deployed` holds the components `flwr run` names).

Flower (flwr 1.42) is installed without its dependency resolution (`pip install --no-deps`, see the
Makefile): its pins on fastapi, starlette, typer, rich, uvicorn and protobuf would downgrade tunesmith's
serving stack, and its code runs with the newer versions. Its other dependencies are the `federated`
extra. Nothing here imports flwr at module level, so `tunesmith --help` stays fast.
"""
