"""The server table (terminal and report) and the p99-latency-against-offered-load chart.

Rows are the server rows (scenarios/server.py): each one's sustained rate in names/s and
tok/s beside the same backend's offline tok/s when the run has an offline row, and the
modelled FPGA's sustained rate over the same schedules. One builder feeds both the terminal
table and the report's section.
"""
from __future__ import annotations

from pathlib import Path

COLUMNS = ("row", "sustained names/s", "sustained tok/s", "offline tok/s", "of offline", "p99 bound",
           "min requests/point", "points", "FPGA names/s")
NUMERIC = frozenset(range(1, len(COLUMNS)))
FPGA_LABEL = "TALOS-V2 (FPGA, modelled)"
FPGA_COLOUR = "#d62728"  # report.FPGA_COLOUR


def server_rows_of(results: dict, label=None) -> list[dict]:
    """[{"label", "row", "server", "offline_tok_s"}] of the rows that ran the server search."""
    from .table import row_label
    rows = results.get("rows", [])
    return server_entries([((label or row_label)(r), r) for r in rows], rows)


def server_entries(labelled: list[tuple[str, dict]], all_rows: list[dict]) -> list[dict]:
    offline = {(r.get("machine"), r["backend"]): (r.get("tok_s") or {}).get("median") for r in all_rows
               if r.get("scenario") == "offline" and r.get("status") == "ok"}
    return [{"label": lab, "row": r, "server": r["server"], "offline_tok_s": offline.get((r.get("machine"), r["backend"]))}
            for lab, r in labelled if r.get("scenario") == "server" and isinstance(r.get("server"), dict)
            and r.get("status") == "ok"]


def _ctx_entries(ctx) -> list[dict]:
    measured = ctx.measured()
    return server_entries([(m["label"], m["row"]) for m in measured], [m["row"] for m in measured])


def _num(value, fmt="{:,.0f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


def server_cells(entries: list[dict]) -> list[list[str]]:
    cells = []
    for e in entries:
        s, off = e["server"], e["offline_tok_s"]
        tok = s.get("sustained_tok_s")
        share = tok / off if isinstance(tok, (int, float)) and off else None
        cells.append([e["label"], _num(s.get("sustained_names_per_s")), _num(tok), _num(off),
                      _num(share, "{:.0%}"), f"{s['latency_bound_s'] * 1e3:g} ms", _num(s.get("requests_per_point")),
                      str(len(s.get("points", []))), _num((s.get("fpga") or {}).get("sustained_names_per_s"))])
    if entries and entries[0]["server"].get("fpga"):
        f, s = entries[0]["server"]["fpga"], entries[0]["server"]
        cells.append([f"{FPGA_LABEL} {f['mhz']:g} MHz", _num(f.get("sustained_names_per_s")),
                      _num(f.get("sustained_tok_s")), "-", "-", f"{s['latency_bound_s'] * 1e3:g} ms",
                      _num(s.get("requests_per_point")), str(len(f.get("points", []))), "-"])
    return cells


def search_lines(entry: dict) -> list[str]:
    """The search's steps of one row: offered rate, achieved, latency percentiles, pass/fail."""
    s = entry["server"]
    out = [f"{entry['label']}: search steps (bound p99 <= {s['latency_bound_s'] * 1e3:g} ms)"]
    for p in s.get("points", []):
        ok = "ok  " if p["p99_ns"] <= s["latency_bound_s"] * 1e9 else "over"
        out.append(f"  {ok} offered {p['offered_names_per_s']:>12,.0f}/s  achieved {p['achieved_names_per_s']:>12,.0f} "
                   f"names/s {p['achieved_tok_s']:>12,.0f} tok/s  mean {p['mean_ns'] / 1e3:>9,.1f} us  "
                   f"p50 {p['p50_ns'] / 1e3:>9,.1f}  p99 {p['p99_ns'] / 1e3:>9,.1f}  "
                   f"p99.9 {p['p99.9_ns'] / 1e3:>9,.1f} us  ({p['requests']:,} requests)")
    return out


def format_server(results: dict) -> str | None:
    from .table import format_columns
    entries = server_rows_of(results)
    if not entries:
        return None
    rows = [dict(zip(COLUMNS, c)) for c in server_cells(entries)]
    text = format_columns(rows, list(COLUMNS), {"row": "implementation"}, numeric=set(COLUMNS[1:]))
    for e in entries:
        text += [""] + search_lines(e)
    return "\n".join(["server: the highest Poisson rate whose p99 name latency met the bound", *text])


def chart_server(ctx, path: Path) -> dict | None:
    """p99 name latency against offered load (log x, log y): every server row and the FPGA, the bound drawn."""
    entries = _ctx_entries(ctx)
    entries = [e for e in entries if e["server"].get("points")]
    if not entries:
        return None
    from .report import figure_tools
    Figure, FigureCanvasAgg, _, _ = figure_tools()
    fig = Figure(figsize=(10, 6.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    plotted = []

    def curve(points, label, **style):
        pts = sorted((p["offered_names_per_s"], p["p99_ns"] / 1e6) for p in points)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=3, lw=1.3, label=label, **style)
        plotted.append(label)

    colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf")  # red is the FPGA's
    for i, e in enumerate(entries):
        curve(e["server"]["points"], e["label"], color=colours[i % len(colours)], ls="-" if i < len(colours) else ":")
    fpga = entries[0]["server"].get("fpga")
    if fpga and fpga.get("points"):
        curve(fpga["points"], f"{FPGA_LABEL} {fpga['mhz']:g} MHz", color=FPGA_COLOUR, ls="--")
    bound_ms = entries[0]["server"]["latency_bound_s"] * 1e3
    ax.axhline(bound_ms, color="0.3", ls=":", lw=1.2, label=f"p99 bound {bound_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # plain-text tick labels: the report turns mathtext off, so matplotlib's 10^k labels would show raw
    from matplotlib.ticker import FuncFormatter, LogLocator
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("offered load (names/s, Poisson)")
    ax.set_ylabel("p99 name latency (ms, from the scheduled arrival)")
    ax.set_title("Server: p99 latency against offered load (rightmost point under the bound: sustained)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7, frameon=False, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    return {"lines": plotted, "bound_ms": bound_ms, "path": str(path)}


def section_server(ctx, d) -> None:
    entries = _ctx_entries(ctx)
    if not entries:
        return
    d.h(2, "Server")
    ctx.figure(d, "server_p99.png")
    d.table(list(COLUMNS), server_cells(entries), numeric=set(NUMERIC), css="rows")
    d.ul([line for e in entries for line in search_lines(e)])
