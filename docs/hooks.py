"""MkDocs hooks: the option and command-line reference pages are generated from the code at build time, so they
cannot go stale (every ranker's `Options` dataclass; every command's parameters from the Typer app)."""

from __future__ import annotations

import html
from typing import Any

from mkdocs.structure.files import File, Files


def _cell(text: object) -> str:
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def options_page() -> str:
    """One table per registered ranker: option, default, help (name families show what the name fixes)."""
    from micebench.rankers.base import available_rankers
    from micebench.rankers.registry import example_name, option_rows

    lines = [
        "# Ranker options",
        "",
        "Generated from each ranker's `Options` dataclass when the site is built. Every option is a flag of "
        "`micebench run`, generated from the same field (and of `train`, `precompute` and `latency` where the "
        "model is trained, stored or timed, except the options those commands own under their own meaning), a key "
        "of an experiment file's `[[rankers]]` entry and a keyword of `micebench.load_ranker`. `micebench models "
        "NAME` prints the same table.",
        "",
    ]
    for model, description in available_rankers().items():
        rows = option_rows(example_name(model))
        lines += [f"## `{model}`", "", _cell(description), ""]
        if not rows:
            lines += ["Takes no options.", ""]
            continue
        lines += ["| option | default | meaning |", "|---|---|---|"]
        lines += [f"| `{flag}` | `{_cell(default)}` | {_cell(meaning)} |" for flag, default, meaning in rows]
        lines.append("")
    return "\n".join(lines)


def cli_page() -> str:
    """Every command of `micebench` with its options, types, defaults and help, from the Typer app."""
    import typer

    from micebench.cli import app

    root = typer.main.get_command(app)
    lines = [
        "# Command line",
        "",
        "Generated from the `micebench` command when the site is built; `micebench COMMAND --help` shows the same.",
        "",
    ]

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group (typer's own click-compatible classes)
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name])
            if path:
                return
        if not path:
            return
        lines.extend([f"## `micebench {' '.join(path)}`", "", _cell((command.help or "").strip()), ""])
        params = [p for p in command.params if p.name != "help"]
        if params:
            lines.extend(["| option | default | help |", "|---|---|---|"])
        for p in params:
            names = ", ".join(f"`{o}`" for o in (getattr(p, "opts", None) or [p.name or ""]))
            default = "" if p.default is None or callable(p.default) else f"`{_cell(p.default)}`"
            help_text = _cell(getattr(p, "help", "") or "")
            lines.append(f"| {names} | {default} | {help_text} |")
        lines.append("")

    walk(root, [])
    return "\n".join(lines)


def on_files(files: Files, config: Any) -> Files:
    for path, text in (("reference/options.md", options_page()), ("reference/cli.md", cli_page())):
        files.append(File.generated(config, path, content=text))
    return files
