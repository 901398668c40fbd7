"""`micebench models`, `schedules` and `attention`: what the rankers are, their schedules, where they attend."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from micebench.cli.app import DataDirOption, app, guide, out


@app.command(epilog=guide("models"))
def models(
    name: Annotated[str | None, typer.Argument(help="A model name: list its options and their defaults.")] = None,
) -> None:
    """List the registered rankers and what each can do, or one model's options with their defaults."""

    from micebench.rankers.registry import abilities, available_rankers, option_rows, ranker_options

    if name is not None:
        ranker_options(name)  # a name's own options in range (mice-l0+1 is no model)
        rows = option_rows(name)
        table = Table(title=f"options of {name} (`run`, experiment files, load_ranker)")
        for column in ("option", "default", "meaning"):
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        out().print(table if rows else f"{name} takes no options")
        return
    table = Table(title="rankers (`micebench models NAME` lists a model's options)")
    table.add_column("model")
    table.add_column("can", no_wrap=True)
    table.add_column("description")
    for model, description in available_rankers().items():
        table.add_row(model, ", ".join(abilities(model)) or "run", description)
    out().print(table)


@app.command(epilog=guide("schedules"))
def schedules(
    show: Annotated[
        str | None, typer.Argument(help="A preset, schedule file or compact rule string to render.")
    ] = None,
    layers: Annotated[int, typer.Option(help="Model depth to render and validate against (layers, >= 1).")] = 12,
) -> None:
    """List the schedule presets, or render one as a per-layer segment x segment grid (✓ attends, · removed)."""
    from micebench.schedules import PRESET_HELP, SEGMENTS, parse_schedule, render_grid

    if show is None:
        table = Table(title="schedule presets (also usable as --model names)")
        table.add_column("preset")
        table.add_column("removes")
        for name, text in PRESET_HELP.items():
            table.add_row(name, text)
        out().print(table)
        out().print(
            "Custom: --schedule 'mask1;document>query@0-4' (from>to[@start-end], end exclusive) or a TOML/YAML file.",
            markup=False,
        )
        return
    schedule = parse_schedule(show).validate(layers)
    out().print(f"{schedule.name}: {schedule.compact()}", markup=False)
    for start, end, grid in schedule.layer_groups(layers):
        table = Table(title=f"layers {start}-{end - 1}", title_justify="left")
        table.add_column("from \\ to")
        for segment in SEGMENTS:
            table.add_column(segment, justify="center")
        for segment, row in zip(SEGMENTS, render_grid(grid), strict=True):
            table.add_row(segment, *row)
        out().print(table)


@app.command(epilog=guide("attention"))
def attention(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose query-candidate pairs are read.")],
    model: Annotated[str, typer.Option("--model", "-m", help="ce, masked-ce or a schedule preset name.")] = "ce",
    checkpoint: Annotated[str | None, typer.Option(help="Cross-encoder weights.")] = None,
    schedule: Annotated[str | None, typer.Option(help="Schedule for masked-ce.")] = None,
    queries: Annotated[int, typer.Option(help="Judged queries to take, in id order (>= 1).")] = 10,
    docs_per_query: Annotated[int, typer.Option(help="Top first-stage candidates per query (>= 1).")] = 2,
    first_stage: Annotated[str, typer.Option(help="Where candidates come from (as for run).")] = "auto",
    group_size: Annotated[int, typer.Option(help="Layers per heatmap figure (>= 1).")] = 3,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = "auto",
    output: Annotated[str, typer.Option("--output", "-o", help="Results root folder.")] = "results",
    data_dir: DataDirOption = None,
) -> None:
    """Measure per-layer attention mass between segments (cls, query, sep1, document, sep2); write table + heatmaps."""
    from micebench.analysis.attention import analyse_attention

    pairs, folder, files = analyse_attention(
        model, dataset, checkpoint, schedule, queries, docs_per_query, first_stage, group_size, device, output, data_dir
    )
    out().print(f"{pairs} pairs; wrote {len(files)} files to {folder}")
