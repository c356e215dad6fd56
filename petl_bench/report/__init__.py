"""Tables, figures' data and the HTML site of the runs under a results folder, from the records alone.

    paper.py     the paper's numbers and names, and when they are no yardstick for ours
    summary.py   a grid's runs against the records found (`Summary`): what tables and figures show
    tables.py    the paper's layouts as Markdown, LaTeX and CSV (`petl-bench table`)
    state.py     what the site gathers beyond a Summary: sweep states, each run's state, name and log
    markup.py    HTML building blocks and where each page of the site lives; the CSS in style.css
    pages.py     the index and grid pages;  run_page.py  a run's page
    site.py      `build_site` (`petl-bench report`)

Here only what the table command and the figures need, none of which imports matplotlib; the site
is `report.site.build_site`.
"""

from .paper import BEYOND_NAMES, PAPER_NAMES, column_name, dataset_name, paper_results, split_name
from .summary import AVERAGE, Cell, Summary, summarize
from .tables import cell_text, render, save_table

__all__ = [
    "AVERAGE",
    "BEYOND_NAMES",
    "PAPER_NAMES",
    "Cell",
    "Summary",
    "cell_text",
    "column_name",
    "dataset_name",
    "paper_results",
    "render",
    "save_table",
    "split_name",
    "summarize",
]
