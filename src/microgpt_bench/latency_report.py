"""The latency table (terminal and report) and the per-token latency CCDF chart.

Rows are the single-stream rows that carry a latency section (latency.py); the
FPGA's line is its cycle model over the first such row's tokens. One builder,
latency_rows, feeds both the terminal table and the report's section.
"""
from __future__ import annotations

from pathlib import Path

from .histogram import LogHistogram

COLUMNS = ("row", "tokens", "p50", "p99", "p99.99", "max", "name p90", "tokens slower than FPGA",
           "names slower than FPGA", "ctx switches", "timer overhead")
NUMERIC = frozenset(range(1, len(COLUMNS)))


def _ns(value) -> str:
    """A duration in ns as text with a unit that keeps it short."""
    if not isinstance(value, (int, float)):
        return ""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} ns"


def _share(part: dict) -> str:
    return f"{part['count']:,} ({part['share']:.2%})" if part.get("of") else ""


def latency_rows_of(results: dict, label=None) -> tuple[list[dict], list[dict]]:
    """(rows with an ok latency section, rows whose latency pass did not run or failed)."""
    from .table import row_label
    label = label or row_label
    good, bad = [], []
    for r in results.get("rows", []):
        lat = r.get("latency") if r.get("status") == "ok" else None
        if isinstance(lat, dict):
            (good if lat.get("status") == "ok" else bad).append({"label": label(r), "row": r, "latency": lat})
    return good, bad


def fpga_line(good: list[dict]) -> dict | None:
    """The FPGA's line from the cycle model over the first row's tokens."""
    if not good:
        return None
    fpga = good[0]["latency"]["fpga"]
    return {"label": f"TALOS-V2 (cycle model, {fpga['mhz']:g} MHz, {good[0]['label']}'s tokens)",
            "fpga": fpga, "tokens": good[0]["latency"]["tokens"]}


def latency_cells(good: list[dict]) -> list[list[str]]:
    """One list of cells (COLUMNS) per row, the FPGA's line last."""
    cells = []
    for g in good:
        lat = g["latency"]
        tok, name = lat["per_token_ns"], lat.get("per_name_ns") or {}
        cs = lat.get("context_switches") or {}
        cells.append([g["label"], f"{lat['tokens']:,}", _ns(tok["p50"]), _ns(tok["p99"]), _ns(tok["p99.99"]),
                      _ns(tok["max"]), _ns(name.get("p90")), _share(lat["slower_than_fpga"]["tokens"]),
                      _share(lat["slower_than_fpga"]["names"]),
                      f"{cs.get('voluntary', 0) + cs.get('involuntary', 0):,}", _ns(lat["timer"]["overhead_ns"])])
    line = fpga_line(good)
    if line:
        tok, name = line["fpga"]["per_token_ns"], line["fpga"].get("per_name_ns") or {}
        cells.append([line["label"], f"{line['tokens']:,}", _ns(tok["p50"]), _ns(tok["p99"]), _ns(tok["p99.99"]),
                      _ns(tok["max"]), _ns(name.get("p90")), "", "", "", ""])
    return cells


def agreement(g: dict) -> float | None:
    """p50 token latency x median tok/s: 1.0 when the two passes agree."""
    tok_s = (g["row"].get("tok_s") or {}).get("median")
    return g["latency"]["per_token_ns"]["p50"] * tok_s / 1e9 if tok_s else None


def latency_notes(good: list[dict], bad: list[dict]) -> list[str]:
    notes = ["per token: gap between consecutive end stamps; a name: BOS to BOS or 16 tokens. "
             "name p90 is MLPerf's SingleStream figure (p90 per-query latency, a query = one name).",
             f"the FPGA's line: TALOS-V2's cycle model ({good[0]['latency']['fpga']['model'] if good else '868 + 20*pos'}), "
             "deterministic given the tokens; a row's token is 'slower' when it took longer than the FPGA's "
             "step at the same position, a name when it took longer than the FPGA's same name.",
             "timer overhead: the median cost of one clock read, measured and shown, not subtracted. "
             "The latency pass is separate from the throughput repeats."]
    for g in good:
        ratio = agreement(g)
        lat = g["latency"]
        if ratio is not None:
            notes.append(f"{g['label']}: p50 x tok/s = {ratio:.2f} (1.00 = latency and throughput agree); "
                         f"stamped in {lat.get('stamped_in')}; cpu {lat.get('cpu')}")
    notes += [f"{b['label']}: latency {b['latency']['status']}: {b['latency'].get('reason', '')}" for b in bad]
    return notes


def format_latency(results: dict) -> str:
    """The terminal latency table, or '' when no row has a latency section."""
    from .table import format_columns
    good, bad = latency_rows_of(results)
    if not good and not bad:
        return ""
    rows = [dict(zip(COLUMNS, c)) for c in latency_cells(good)]
    numeric = {c for i, c in enumerate(COLUMNS) if i in NUMERIC}
    lines = ["latency (single-stream, separate timestamped pass)"]
    lines += format_columns(rows, COLUMNS, {"row": "implementation"}, numeric)
    return "\n".join(lines + [""] + latency_notes(good, bad))


# ------------------------------------------------------------------ report hooks


def _entries_with_latency(ctx) -> list[dict]:
    """[{label, row, latency}] of every measured entry with an ok latency section."""
    return [{"label": e["label"], "row": e["row"], "latency": e["row"]["latency"]} for e in ctx.measured()
            if e["status"] == "ok" and isinstance(e["row"].get("latency"), dict)
            and e["row"]["latency"].get("status") == "ok"]


def chart_latency(ctx, path: Path) -> dict | None:
    """Per-token latency CCDF, log-log, one line per row, the FPGA's band shaded; None without data."""
    from .report import figure_tools
    good = _entries_with_latency(ctx)
    if not good:
        return None
    Figure, FigureCanvasAgg, _, _ = figure_tools()
    import matplotlib
    fig = Figure(figsize=(11, 6.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = matplotlib.colormaps["tab20"].colors
    plotted = []
    for i, g in enumerate(good):
        hist = LogHistogram.from_dict(g["latency"]["histograms"]["per_token_ns"])
        points = [(x, y) for x, y in hist.ccdf() if y > 0]
        if points:
            points.append((hist.max, points[-1][1]))  # the slowest token: the line runs on to the max
            xs, ys = zip(*points)
            ax.step(xs, ys, where="post", lw=1.3, color=colours[i % len(colours)],
                    ls="-" if i < len(colours) else "--", label=g["label"])
            plotted.append(g["label"])
    fpga = good[0]["latency"]["fpga"]["per_token_ns"]
    ax.axvspan(fpga["min"], fpga["max"], color="0.2", alpha=0.18,
               label=f"TALOS-V2 per token, {fpga['min'] / 1e3:.1f}-{fpga['max'] / 1e3:.1f} µs (fixed by position)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # plain-text tick labels: the report turns mathtext off, so matplotlib's 10^k labels would show raw
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.yaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _ns(v)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("per-token latency")
    ax.set_ylabel("share of tokens slower than x")
    ax.set_title("Per-token latency, complementary CDF (lower and further left is better)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    return {"labels": plotted, "fpga_band_ns": [fpga["min"], fpga["max"]], "path": str(path)}


def section_latency(ctx, d) -> None:
    """The latency table of every measured row with a latency section, and the CCDF chart."""
    good = _entries_with_latency(ctx)
    bad = [{"label": e["label"], "latency": e["row"]["latency"]} for e in ctx.measured()
           if isinstance(e["row"].get("latency"), dict) and e["row"]["latency"].get("status") != "ok"]
    if not good and not bad:
        return
    d.h(2, "Latency")
    ctx.figure(d, "latency_ccdf.png")
    d.table(list(COLUMNS), latency_cells(good), numeric=set(NUMERIC), css="rows")
    d.ul(latency_notes(good, bad))
