"""Evaluation reports: a text or markdown table (mean ± std over seeds), JSON, and a PNG chart.

The chart is drawn with matplotlib's object API on an Agg canvas, so it needs no display.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.recsys.experiment import ModelResult, ProtocolResult

RANKING_COLUMNS = ("hr", "precision", "recall", "f1", "ndcg", "mrr", "map")
COLUMN_TITLES = {"hr": "HR", "precision": "P", "recall": "R", "f1": "F1", "ndcg": "NDCG", "mrr": "MRR", "map": "MAP",
                 "coverage": "Cov", "novelty": "Nov", "rmse": "RMSE", "mae": "MAE"}  # fmt: skip


def is_rating(res: ProtocolResult) -> bool:
    return res.protocol.startswith("rating")


def metric_columns(res: ProtocolResult, k: int) -> list[str]:
    if is_rating(res):
        return ["rmse", "mae"]
    cols = [f"{m}@{k}" for m in RANKING_COLUMNS]
    return cols if res.sampled else cols + [f"coverage@{k}", f"novelty@{k}"]


def cell(m: ModelResult, key: str, digits: int = 4) -> str:
    if key not in m.mean:
        return "-"
    std = m.std[key]
    return f"{m.mean[key]:.{digits}f} ± {std:.{digits}f}" if len(m.runs) > 1 else f"{m.mean[key]:.{digits}f}"


def table_rows(res: ProtocolResult, k: int) -> tuple[list[str], list[list[str]]]:
    cols = metric_columns(res, k)
    header = ["model", *(_title(c) for c in cols), "train s", "epochs", "status"]
    rows = []
    for name, m in res.models.items():
        status = m.status if not m.reason else f"{m.status}: {m.reason}"
        if m.runs:
            rows.append([name, *(cell(m, c) for c in cols), cell(m, "train_s", 1), cell(m, "epochs", 1), status])
        else:
            rows.append([name, *(["-"] * len(cols)), "-", "-", status])
    return header, rows


def _title(key: str) -> str:
    name, _, k = key.partition("@")
    return COLUMN_TITLES.get(name, name) + (f"@{k}" if k else "")


def format_table(res: ProtocolResult, k: int | None = None, markdown: bool = False) -> str:
    """One table; for ranking protocols at cut-off ``k`` (every K of the run when None)."""
    ks = [None] if is_rating(res) else ([k] if k is not None else list(res.cfg.ks))
    blocks = []
    for kk in ks:
        header, rows = table_rows(res, kk or 0)
        seeds = len(res.cfg.seeds)
        title = f"{res.protocol}{'' if kk is None else f' @{kk}'}: {res.label} (mean ± std over {seeds} seed(s))"
        blocks.append(_render(title, header, rows, markdown))
    return "\n\n".join(blocks)


def _render(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [title, fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    return "\n".join(lines + [fmt.format(*r).rstrip() for r in rows])


def write_json(results: list[ProtocolResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_dict() for r in results], indent=2))


PLOT_MISSING = "charts need matplotlib, an optional extra: pip install 'deeprec[plot]' (or pip install matplotlib)"


def require_matplotlib() -> None:
    """Raise a RuntimeError that says what to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise RuntimeError(PLOT_MISSING) from e


def plot(res: ProtocolResult, path: Path) -> None:
    """Bars of the mean over seeds with std error bars, one dot per seed; one panel per metric."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = ["rmse", "mae"] if is_rating(res) else [f"{m}@{k}" for m in ("ndcg", "hr") for k in res.cfg.ks]
    models = [m for m in res.models.values() if m.runs]
    ncols = 2 if is_rating(res) else len(res.cfg.ks)
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(max(4.0, 0.6 * len(models) + 1.5) * ncols, 3.4 * nrows + 0.6))
    FigureCanvasAgg(fig)
    x = np.arange(len(models))
    for i, key in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        means = [m.mean.get(key, np.nan) for m in models]
        stds = [m.std.get(key, 0.0) for m in models]
        ax.bar(x, means, yerr=stds, capsize=4, color="#4C72B0", alpha=0.8)
        for j, m in enumerate(models):
            vals = [float(r[key]) for r in m.runs if key in r]
            ax.scatter(np.full(len(vals), x[j]), vals, color="black", s=10, zorder=3)
        ax.set_xticks(x, [m.name for m in models], rotation=45, ha="right", fontsize=8)
        ax.set_title(_title(key) + (" (sampled)" if res.sampled else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{res.protocol}: {res.label}\nmean ± std over {len(res.cfg.seeds)} seed(s)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
