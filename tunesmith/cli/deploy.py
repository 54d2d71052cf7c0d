"""`tunesmith deploy`: deployments that split traffic between adapter versions (A/B), with history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tunesmith.cli.common import UsageError, console, fail, print_json

if TYPE_CHECKING:
    from tunesmith.registry.serving_records import VariantWeight

app = typer.Typer(help="Deployments: one name, several variants with traffic weights (sticky per user).")

# The parameters every deployment command shares, declared once.
_Name = Annotated[str, typer.Argument(help="Deployment name.", show_default=False)]
_Variants = Annotated[
    list[str],
    typer.Option(
        "--variant", "-v", help="MODEL=WEIGHT, e.g. acme@3=90 (repeatable; weights need not sum to 100)."
    ),
]
_Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_RequireBiasAudit = Annotated[
    bool,
    typer.Option(
        "--require-bias-audit",
        help="Refuse (exit 2) unless every adapter version that gets traffic has a bias audit in the "
        "registry (`tunesmith audit bias NAME@VERSION`) whose gate passed; the latest audit decides.",
    ),
]


def _store() -> Any:
    from tunesmith.config import default_database_url
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry

    return ServingStore(Registry(default_database_url()).connect())


def _variants(items: list[str]) -> list[VariantWeight]:
    variants: list[VariantWeight] = []
    for item in items:
        model, sep, weight = item.rpartition("=")
        try:
            variants.append({"model": model, "weight": float(weight)})
        except ValueError:
            sep = ""
        if not sep or not model:
            raise UsageError(f"--variant {item}: expected MODEL=WEIGHT, e.g. acme@3=90")
    return variants


def _show(name: str, json_output: bool, bias_audits: dict[str, int] | None = None) -> None:
    from tunesmith.registry.serving_records import Caller

    deployment = _store().find_deployment(Caller(tenant=None, is_admin=True), name)
    if deployment is None:
        fail(f"no deployment named {name}")
    if json_output:
        print_json({**deployment, "bias_audits": bias_audits} if bias_audits else deployment)
        return
    console.print(f"[bold]{name}[/]  tenant: {deployment['tenant'] or '-'}")
    for model, evaluation in (bias_audits or {}).items():
        console.print(f"  bias audit passed: {model} (evaluation {evaluation})", highlight=False)
    total = sum(v["weight"] for v in deployment["variants"])
    for variant in deployment["variants"]:
        console.print(f"  {variant['model']:<24} {100 * variant['weight'] / total:5.1f}%")
    for change in deployment["history"]:
        models = ", ".join(f"{v['model']}={v['weight']:g}" for v in change["variants"])
        console.print(f"  [dim]{change['at'][:19]}  {change['action']:<12} {models}[/]", highlight=False)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The name clients put in `model`.", show_default=False)],
    variant: _Variants,
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Owning tenant (its adapters only)."),
    json_output: _Json = False,
) -> None:
    """Create a deployment, e.g. `tunesmith deploy create acme-voice -v acme@3=90 -v acme@4=10 -t acme`."""
    _store().create_deployment(name, _variants(variant), tenant=tenant)
    _show(name, json_output)


@app.command("weights")
def weights(
    name: _Name, variant: _Variants, require_bias_audit: _RequireBiasAudit = False, json_output: _Json = False
) -> None:
    """Replace a deployment's variants and weights (recorded in its history)."""
    audits = _store().set_weights(name, _variants(variant), require_bias_audit=require_bias_audit)
    _show(name, json_output, audits)


@app.command("promote")
def promote(
    name: _Name,
    model: str = typer.Argument(..., help="Variant that gets all traffic, e.g. acme@4."),
    require_bias_audit: _RequireBiasAudit = False,
    json_output: _Json = False,
) -> None:
    """Send 100% of traffic to one variant, e.g. `tunesmith deploy promote acme-voice acme@4
    --require-bias-audit`."""
    audits = _store().promote(name, model, require_bias_audit=require_bias_audit)
    _show(name, json_output, audits)


@app.command("rollback")
def rollback(name: _Name, json_output: _Json = False) -> None:
    """Restore the variants in force before the last change."""
    _store().rollback(name)
    _show(name, json_output)


@app.command("show")
def show(name: _Name, json_output: _Json = False) -> None:
    """Current split and the full history of changes."""
    _show(name, json_output)


@app.command("list")
def list_deployments(json_output: _Json = False) -> None:
    """Every deployment with its current split."""
    from tunesmith.registry.serving_records import Caller

    deployments = _store().list_deployments(Caller(tenant=None, is_admin=True))
    if json_output:
        print_json(deployments)
        return
    for deployment in deployments:
        split = ", ".join(f"{v['model']}={v['weight']:g}" for v in deployment["variants"])
        console.print(f"{deployment['name']:<24} {deployment['tenant'] or '-':<12} {split}", highlight=False)
