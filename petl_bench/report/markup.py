"""HTML building blocks of the site and where each of its pages lives.

Pages hold no script and load nothing from elsewhere: the style sheet (`style.css`, package data)
is inlined into each page, links are relative, so the site opens from disk without network.
"""

from __future__ import annotations

import html
import os
import time
from functools import cache
from importlib import resources
from pathlib import Path
from urllib.parse import quote


class Site:
    """Where each page and image of the site lives."""

    def __init__(self, out: Path, root: Path):
        self.out, self.root = out.resolve(), root.resolve()
        self.index = self.root / "index.html"

    def grid_page(self, name: str) -> Path:
        return self.root / "grids" / f"{name}.html"

    def run_page(self, record: Path) -> Path:
        return (self.root / "runs" / record.relative_to(self.out / "runs")).with_suffix(".html")


@cache
def style_sheet() -> str:
    return resources.files("petl_bench.report").joinpath("style.css").read_text(encoding="utf-8")


def html_page(title: str, body: list[str], site: Site, page: Path, banner: str | None = None) -> str:
    nav = "" if page == site.index else f"<nav>{link(page, site.index, '← all grids and runs')}</nav>"
    notice = f'<div class="banner">{esc(banner)}</div>' if banner else ""
    footer = (
        f"<footer>petl-bench report of <code>{esc(site.out)}</code>, written "
        f"{esc(time.strftime('%Y-%m-%d %H:%M:%S %z'))}</footer>"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{style_sheet()}</style>'
        f"</head><body>{nav}{notice}{''.join(body)}{footer}</body></html>\n"
    )


def esc(value) -> str:
    return html.escape(str(value))


def href(page: Path, target: Path) -> str:
    """A relative URL from `page` to `target`."""
    return quote(Path(os.path.relpath(target, page.parent)).as_posix())


def link(page: Path, target: Path, text: str, title: str = "") -> str:
    hover = f' title="{esc(title)}"' if title else ""
    return f'<a href="{href(page, target)}"{hover}>{esc(text)}</a>'


def file_link(page: Path, target: Path, text: str) -> str:
    """A link to a file of the results folder, or its name marked absent: no link leads nowhere."""
    if target.is_file():
        return link(page, target.resolve(), text)
    return f'<span class="absent">{esc(text)} (absent)</span>'


def facts(rows: list[tuple[str, str]], kind: str = "facts") -> str:
    rows_html = "".join(f"<tr><th>{esc(key)}</th><td>{value}</td></tr>" for key, value in rows)
    return f'<table class="facts {kind}">{rows_html}</table>'


def row(*cells: str) -> str:
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def table(head: list[str], rows: list[str], kind: str) -> str:
    return (
        f'<table class="{kind}"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def accuracy(value) -> str:
    return "" if value is None else f"{float(value):.2f}"
