"""``densify models``: the catalogue, from its facts table (no model is built)."""

from __future__ import annotations

import click

from . import options

__all__ = ["models"]


@click.command()
@click.argument("name", required=False)
@click.option("--family", type=click.Choice(["torchvision", "seed", "timm", "project"]),
              default=None, help="Only this family.")
@options.json_output()
def models(name: str | None, family: str | None, json_path: str | None) -> None:
    """List the supported models (canonical input, output strides, parameters), or show NAME's
    card."""
    from ..models import catalogue

    if name is not None:
        card = catalogue.model_card(name)
        if not options.write_json_output(json_path, card) or json_path != "-":
            click.echo(catalogue.format_card(card))
        return
    rows = [catalogue.model_card(n) for n in catalogue.model_names(family)]
    if options.write_json_output(json_path, rows) and json_path == "-":
        return
    click.echo(f"{'name':22s} {'family':11s} {'input':>11s} {'strides':>10s} {'params':>9s}")
    for r in rows:
        size = "x".join(str(v) for v in r["input_size"])
        strides = "/".join(str(s) for s in r["strides"]) or "?"
        params = f"{r['params'] / 1e6:8.1f}M" if r["params"] else "       ?"
        click.echo(f"{r['name']:22s} {r['family']:11s} {size:>11s} {strides:>10s} {params}")
    click.echo(f"refused: {', '.join(sorted(catalogue.REFUSED))} (vision transformers)")
