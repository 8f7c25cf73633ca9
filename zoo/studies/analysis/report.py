"""The report folder writer: `report.md`, tables as `tables/<name>.parquet` and `.csv`, figures as
`figures/<name>.png` with file-system-safe unique names."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from zoo import layout

MAX_NAME = 100  # characters of a figure's file name, before `.png`


def safe_name(text: str, limit: int = MAX_NAME) -> str:
    """A file name made of letters, digits, `.`, `-` and `_` only (runs of anything else become one `_`), at most
    `limit` characters: a longer one keeps its start and ends with a short hash of the whole, so it stays unique."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "figure"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:limit - 9].rstrip('._-')}_{digest}"


class Report:
    """Collects tables, figures and markdown of one report folder."""

    def __init__(self, out: Path):
        self.out = out
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []
        self.tables: dict[str, int] = {}
        self.figures: list[str] = []

    def table(self, name: str, rows: list[dict[str, Any]] | Any) -> Any:
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        for column in frame.columns:  # parquet needs one type per column
            if frame[column].dtype == object:
                frame[column] = frame[column].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
        frame.to_parquet(self.out / "tables" / f"{name}.parquet", index=False)
        frame.to_csv(self.out / "tables" / f"{name}.csv", index=False)
        self.tables[name] = len(frame)
        self.lines.append(f"Table: [`tables/{name}.csv`](tables/{name}.csv) ([parquet](tables/{name}.parquet)), "
                          f"{len(frame)} rows.\n")
        return frame

    def figure(self, name: str, fig) -> str:
        """Save `fig` as figures/<name>.png, the name made filesystem-safe and unique within the report (a second
        `cka_x` becomes `cka_x_2`), and link it; returns the name used."""
        import matplotlib.pyplot as plt

        name = base = safe_name(name)
        count = 1
        while name in self.figures:
            count += 1
            name = f"{base}_{count}"
        fig.tight_layout()
        fig.savefig(self.out / "figures" / f"{name}.png", dpi=110)
        plt.close(fig)
        self.figures.append(name)
        self.lines.append(f"![{name}](figures/{name}.png)\n")
        return name

    def md(self, text: str = "") -> None:
        self.lines.append(text)

    def markdown_table(self, frame, max_rows: int = 30, floatfmt: str = ".4f") -> None:
        if frame is None or len(frame) == 0:
            return
        shown = frame.head(max_rows)
        header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
        self.lines.append(header)
        self.lines.append("|" + "---|" * len(shown.columns))
        for _, row in shown.iterrows():
            cells = [format(v, floatfmt) if isinstance(v, float) and not math.isnan(v) else str(v) for v in row]
            self.lines.append("| " + " | ".join(cells) + " |")
        if len(frame) > max_rows:
            self.lines.append(f"\n({len(frame) - max_rows} more rows in the table file)")
        self.lines.append("")

    def id_key(self, names: list[str], ids: dict[str, str]) -> None:
        """The key of a figure's short ids: the member each id stands for."""
        import pandas as pd

        self.md("Key of the ids (all ids in the `members` table):\n")
        self.markdown_table(pd.DataFrame({"id": [ids[n] for n in names], "member": names}), max_rows=40)

    def write(self) -> Path:
        layout.atomic_write_text(self.out / "report.md", "\n".join(self.lines) + "\n")
        return self.out / "report.md"
