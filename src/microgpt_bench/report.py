"""Reports people look at: charts, a Markdown page and a self-contained HTML page.

    microgpt-bench report RESULTS.json [MORE.json ...] --out DIR [--with-published] [--watts BACKEND=W ...]

writes into DIR every chart in CHARTS that has data (throughput.png, perf_per_watt.png,
scaling.png, latency_ccdf.png), report.md (the sections in SECTIONS) and report.html (the same on one
page, charts embedded, no external resources, no script).

Several results files (machines, runs) merge into one report; rows are labelled
"machine · backend [scenario]". Published figures (data/published.json) join only with
--with-published, and always under the label "published · ...".

Extending the report (one function and one line each):
  - a section: `def section_x(ctx: Context, d: Doc) -> None` that appends blocks to d
    (d.h, d.p, d.ul, d.table, and ctx.figure(d, "x.png") for a chart), then its name
    in SECTIONS where it should appear;
  - a chart: `def chart_x(ctx: Context, path: Path) -> dict | None` that draws into path
    (matplotlib's Figure from figure_tools()) and returns what it plotted (for the tests),
    or None when there is nothing to plot; then `Chart("x.png", chart_x, "caption")` in CHARTS.
Context gives every section and chart the same data: docs (the loaded results files),
paths, entries (one per row, see build_entries), published, watts, fpga, charts (drawn).
Text written into a page goes through Doc, which escapes it for Markdown and HTML; text
drawn into a chart is never parsed as mathtext.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__, scenarios
from .accuracy import describe as describe_accuracy
from .power import describe as describe_power
from .power import resolve_power
from .latency_report import chart_latency, section_latency
from .server_report import chart_server, section_server
from .results import FPGA_TOK_S, load_results
from .table import (COLUMNS, NUMERIC_COLUMNS, basis_word, fpga_lines, measured_line, scenario_tag,
                    throughput_notes, throughput_rows)

PUBLISHED_PATH = Path(__file__).resolve().parent / "data" / "published.json"
MISSING_MATPLOTLIB = ("charts not drawn: matplotlib is not installed "
                      "(pip install 'microgpt-bench[charts]'); report.md and report.html have the tables only")
FPGA_COLOUR = "#d62728"
PUBLISHED_COLOUR = "#b8b8b8"
MACHINE_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22"]
HATCH = {"measured": "", "given": "..", "assumed": "///", "none": ""}
# A report is read by people: past a few hundred rows its bar charts stop being legible and
# drawing them costs hundreds of MB. Bigger inputs are refused up front (split the files).
MAX_REPORT_ROWS = 400
CHART_LABEL_CHARS = 80  # longer labels are cut in the charts (the tables keep them whole)


class ReportError(ValueError):
    """A problem with the report's output: printed as one line by the CLI (exit 2)."""


# ------------------------------------------------------------------ data


def load_published(path: str | Path = PUBLISHED_PATH) -> dict:
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != "microgpt-bench/published" or doc.get("schema_version") != 1:
        raise ValueError(f"{path}: not a published-figures file of version 1")
    return doc


def fpga_reference(published: dict | None = None) -> dict:
    """TALOS-V2's throughput and its (assumed) power, from the shipped published figures."""
    published = published or load_published()
    for row in published["rows"]:
        if row.get("fpga"):
            return {"name": row["backend"], "tok_s": float(row["tok_s"]), "power": row["power"],
                    "source": published["sources"].get(row.get("source"), {})}
    return {"name": "TALOS-V2 (FPGA)", "tok_s": float(FPGA_TOK_S),
            "power": {"watts": 2.0, "basis": "assumed", "method": "assumed: about 2 W"}, "source": {}}


def machine_label(doc: dict, index: int) -> str:
    return str((doc.get("machine") or {}).get("label") or doc.get("_path_stem") or f"machine {index + 1}")


def _median_tok_s(row: dict) -> float | None:
    tok = row.get("tok_s")
    if isinstance(tok, dict):
        tok = tok.get("median")
    if isinstance(tok, (int, float)) and tok > 0:
        return float(tok)
    rates = [r for r in row.get("repeats_tok_s") or [] if isinstance(r, (int, float)) and r > 0]
    return statistics.median(rates) if rates else None


def build_entries(docs: list[dict], published: dict | None = None,
                  watts: dict[str, float] | None = None) -> list[dict]:
    """One entry per row of every results file (and of the published figures, if given).

    entry: label, machine, backend, scenario, tag, status, source ("measured"/"published"),
    tok_s, power (resolved: measured > --watts > assumed), per_watt, row (the original), doc (index).
    """
    entries = []
    for i, doc in enumerate(docs):
        machine = doc.get("machine") or {}
        for row in doc.get("rows", []):
            if isinstance(row, dict):
                entries.append(_entry(row, machine_label(doc, i), machine, "measured", i, watts))
    machines = list(dict.fromkeys(e["machine"] for e in entries))  # file order
    for e in entries:
        e["colour"] = MACHINE_COLOURS[machines.index(e["machine"]) % len(MACHINE_COLOURS)]
    seen: dict[str, int] = {}
    for e in entries:  # the same machine, backend and scenario in two files: number the repeats
        n = seen[e["label"]] = seen.get(e["label"], 0) + 1
        if n > 1:
            e["label"] += f" #{n}"
    for row in (published or {}).get("rows", []):
        if row.get("fpga"):
            continue  # the FPGA is the reference line, not a bar
        pm = published.get("machines", {}).get(row["machine"], {"label": row["machine"]})
        e = _entry({**row, "status": "ok"}, row["machine"], pm, "published", None, None)
        e["status"], e["published_source"] = "published", row.get("source")
        e["label"] = f"published · {e['label']}"
        entries.append(e)
    return entries


def _entry(row: dict, mlabel: str, machine: dict, source: str, doc_index, watts) -> dict:
    backend = str(row.get("backend") or "?")
    tag = scenario_tag(row)
    tok = _median_tok_s(row) if row.get("status") == "ok" else None
    power = resolve_power(row, machine, watts) if source == "measured" else dict(row.get("power") or {})
    per_watt = tok / power["watts"] if tok and _positive(power.get("watts")) else None
    return {"label": f"{mlabel} · {backend} [{tag}]", "machine": mlabel, "backend": backend,
            "scenario": scenarios.for_row(row).name, "tag": tag, "status": row.get("status", "failed"),
            "source": source, "tok_s": tok, "power": power, "per_watt": per_watt, "row": row, "doc": doc_index}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def plotted(entries: list[dict]) -> list[dict]:
    """Entries with a throughput figure, fastest first."""
    return sorted((e for e in entries if e["tok_s"]), key=lambda e: -e["tok_s"])


def with_power(entries: list[dict]) -> list[dict]:
    """Entries with a tok/s-per-watt figure, best first."""
    return sorted((e for e in entries if e["per_watt"]), key=lambda e: -e["per_watt"])


@dataclass
class Context:
    """What every section and chart sees."""
    docs: list[dict]
    paths: list[str]
    entries: list[dict]
    published: dict | None = None
    watts: dict[str, float] = field(default_factory=dict)
    fpga: dict = field(default_factory=fpga_reference)
    charts: dict[str, dict] = field(default_factory=dict)  # drawn: file name -> what it plotted
    note: str | None = None  # why charts are missing, when they are

    def figure(self, d: "Doc", name: str) -> None:
        """The chart `name` in the page, if it was drawn, with its registered caption."""
        if name in self.charts:
            d.img(name, next(c.caption for c in CHARTS if c.name == name))

    def measured(self) -> list[dict]:
        return [e for e in self.entries if e["source"] == "measured"]


# ------------------------------------------------------------------ charts


def figure_tools():
    """(Figure, FigureCanvasAgg, Patch, Line2D), or raise ImportError when matplotlib is missing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return Figure, FigureCanvasAgg, Patch, Line2D


def have_matplotlib() -> bool:
    try:
        figure_tools()
    except ImportError:
        return False
    return True


def _colours(entries: list[dict]) -> dict[str, str]:
    """Machine -> colour, as build_entries assigned them (the same in every chart)."""
    out = {}
    for e in entries:
        if e["source"] == "measured":
            out.setdefault(e["machine"], e.get("colour", PUBLISHED_COLOUR))
    return dict(sorted(out.items(), key=lambda kv: MACHINE_COLOURS.index(kv[1]) if kv[1] in MACHINE_COLOURS
                       else len(MACHINE_COLOURS)))


@dataclass
class BarSpec:
    """One horizontal bar chart: what it shows and the reference line it is measured against."""
    title: str
    xlabel: str
    ref_value: float
    ref_label: str
    value_text: Callable[[dict, float], str]
    with_basis: bool = False


def _bar_chart(entries: list[dict], values: list[float], path, spec: BarSpec) -> dict:
    Figure, FigureCanvasAgg, _, _ = figure_tools()
    labels = [e["label"] for e in entries]
    shown = [_cut(x) for x in labels]
    n = len(labels)
    longest = max([len(s) for s in shown] + [10])
    fig = Figure(figsize=(max(10.0, 6.5 + longest * 0.075), 1.9 + 0.34 * max(n, 1)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    span = [v for v in values if v] + [spec.ref_value]
    log = bool(values) and max(span) / min(span) > 100
    ys = list(range(n))
    bar_colours = [e.get("colour", PUBLISHED_COLOUR) if e["source"] == "measured" else PUBLISHED_COLOUR
                   for e in entries]
    bars = ax.barh(ys, values, color=bar_colours, edgecolor="#333333", linewidth=0.6, height=0.7, zorder=2)
    if spec.with_basis:
        for bar, e in zip(bars, entries):
            bar.set_hatch(HATCH.get(e["power"].get("basis"), ""))
    ax.set_yticks(ys)
    ax.set_yticklabels(shown, fontsize=9)
    ax.invert_yaxis()  # fastest at the top
    for y, v, e in zip(ys, values, entries):
        ax.text(v * (1.06 if log else 1.0) + (0 if log else max(span) * 0.01), y, spec.value_text(e, v),
                va="center", ha="left", fontsize=8, zorder=4,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.4})
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(span) / 2.5, max(span) * 12)
    else:
        ax.set_xlim(0, max(span) * 1.45)
    _reference_line(ax, spec, log, n)
    ax.set_ylim(n - 0.5 if n else 0.5, -1.6)
    ax.set_xlabel(spec.xlabel + (" (log scale)" if log else ""))
    ax.set_title(spec.title, fontsize=12, loc="left")
    ax.grid(axis="x", color="#dddddd", zorder=0)
    ax.xaxis.set_major_formatter(_thousands_formatter())
    _bar_legend(fig, ax, entries, spec)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    return {"labels": labels, "values": list(values), "log": log, "reference": spec.ref_value, "path": str(path)}


def _cut(text: str) -> str:
    return text if len(text) <= CHART_LABEL_CHARS else text[:CHART_LABEL_CHARS - 1] + "…"


def _reference_line(ax, spec: BarSpec, log: bool, n: int) -> None:
    ax.axvline(spec.ref_value, color=FPGA_COLOUR, linestyle="--", linewidth=2.2, zorder=3)
    lo, hi = ax.get_xlim()
    where = ((math.log(spec.ref_value) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log
             else (spec.ref_value - lo) / (hi - lo))
    right_half = where > 0.5  # the label goes on the side of the line with room for it
    ax.text(spec.ref_value, -0.9 if n else 0, f" {spec.ref_label} " if right_half else f" {spec.ref_label}",
            color=FPGA_COLOUR, fontsize=9, fontweight="bold", va="bottom", ha="right" if right_half else "left",
            zorder=4)


def _bar_legend(fig, ax, entries: list[dict], spec: BarSpec) -> None:
    from matplotlib import transforms

    _, _, Patch, Line2D = figure_tools()
    handles = [Patch(facecolor=c, edgecolor="#333333", label=_cut(m)) for m, c in _colours(entries).items()]
    if any(e["source"] == "published" for e in entries):
        handles.append(Patch(facecolor=PUBLISHED_COLOUR, edgecolor="#333333", label="published (not measured here)"))
    if spec.with_basis:
        for basis, name in (("measured", "power measured"), ("given", "power given (--watts)"),
                            ("assumed", "power assumed")):
            if any(e["power"].get("basis") == basis for e in entries):
                handles.append(Patch(facecolor="white", edgecolor="#333333", hatch=HATCH[basis], label=name))
    handles.append(Line2D([0], [0], color=FPGA_COLOUR, linestyle="--", linewidth=2.2, label=spec.ref_label))
    below = transforms.offset_copy(ax.transAxes, fig=fig, x=0, y=-0.55, units="inches")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below,
              ncol=min(4, len(handles)), fontsize=8, frameon=False)


def _thousands_formatter():
    from matplotlib.ticker import FuncFormatter

    def fmt(x, _pos):
        if x >= 1e6:
            return f"{x / 1e6:g}M"
        if x >= 1e3:
            return f"{x / 1e3:g}k"
        return f"{x:g}"
    return FuncFormatter(fmt)


def chart_throughput(ctx: Context, path: Path) -> dict:
    """Horizontal bars of tok/s, sorted; returns {"labels", "values", "log", "reference", "path"}."""
    fpga_tok = ctx.fpga["tok_s"]
    rows = plotted(ctx.entries)
    return _bar_chart(rows, [e["tok_s"] for e in rows], path, BarSpec(
        "microGPT inference throughput (batch 1 unless offline)", "tokens per second", fpga_tok,
        f"TALOS-V2 FPGA: {fpga_tok:,.0f} tok/s", lambda e, v: f"{v:,.0f}  ({v / fpga_tok:.2f}x FPGA)"))


def chart_perf_per_watt(ctx: Context, path: Path) -> dict:
    """tok/s per watt for rows with a power figure; returns labels, values and each bar's basis."""
    rows = with_power(ctx.entries)
    fpga_w = ctx.fpga["power"].get("watts") or 2.0
    ref = ctx.fpga["tok_s"] / fpga_w
    data = _bar_chart(rows, [e["per_watt"] for e in rows], path, BarSpec(
        "tokens per second per watt", "tokens per second per watt", ref,
        f"TALOS-V2 FPGA: {ref:,.0f} tok/s/W ({ctx.fpga['power'].get('basis', 'assumed')} {fpga_w:g} W)",
        lambda e, v: f"{v:,.0f}  [{basis_word(e['power'])} {e['power']['watts']:.4g} W]", with_basis=True))
    data["basis"] = [e["power"].get("basis") for e in rows]
    data["watts"] = [e["power"].get("watts") for e in rows]
    return data


def sweep_series(docs: list[dict]) -> list[dict]:
    """[{"title", "machine", "backend", "lines": {threads: [(streams, tok_s), ...]}}] from every sweep."""
    out = []
    for i, doc in enumerate(docs):
        mlabel = machine_label(doc, i)
        for sweep in doc.get("sweeps") or []:
            lines: dict[int, list] = {}
            for p in sweep.get("points") or [] if isinstance(sweep, dict) else []:
                tok = _median_tok_s({"tok_s": p.get("tok_s")}) if isinstance(p, dict) else None
                if tok and p.get("streams"):
                    lines.setdefault(int(p.get("threads") or 1), []).append((int(p["streams"]), tok))
            if lines:
                backend = sweep.get("backend", "?")
                out.append({"title": f"{mlabel} · {backend} [offline sweep]", "machine": mlabel, "backend": backend,
                            "lines": {t: sorted(pts) for t, pts in sorted(lines.items())}})
    return out


def chart_scaling(ctx: Context, path: Path) -> dict | None:
    """tok/s against streams, one line per threads count, one panel per sweep; None without sweeps."""
    series = sweep_series(ctx.docs)
    if not series:
        return None
    Figure, FigureCanvasAgg, _, _ = figure_tools()
    fig = Figure(figsize=(9, 4.6 * len(series)), dpi=110)
    FigureCanvasAgg(fig)
    plotted_lines = []
    for k, s in enumerate(series):
        ax = fig.add_subplot(len(series), 1, k + 1)
        for t, pts in s["lines"].items():
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker="o", linewidth=1.8, label=f"{t} thread{'s' if t > 1 else ''}")
            plotted_lines.append({"title": s["title"], "threads": t, "streams": xs, "tok_s": ys})
        ax.axhline(ctx.fpga["tok_s"], color=FPGA_COLOUR, linestyle="--", linewidth=2,
                   label=f"TALOS-V2 FPGA: {ctx.fpga['tok_s']:,.0f} tok/s")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("independent streams")
        ax.set_ylabel("tokens per second (all streams)")
        ax.set_title(_cut(s["title"]), fontsize=11, loc="left")
        ax.grid(True, which="major", color="#dddddd")
        ax.yaxis.set_major_formatter(_thousands_formatter())
        ax.xaxis.set_major_formatter(_thousands_formatter())
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    return {"lines": plotted_lines, "path": str(path)}


@dataclass(frozen=True)
class Chart:
    name: str  # the file in --out
    draw: Callable[[Context, Path], dict | None]
    caption: str


CHARTS = [
    Chart("throughput.png", chart_throughput, "tokens per second, the TALOS-V2 FPGA as the dashed reference line"),
    Chart("perf_per_watt.png", chart_perf_per_watt,
          "tokens per second per watt; solid bars measured, hatched assumed, dotted given with --watts"),
    Chart("scaling.png", chart_scaling,
          "offline throughput against the number of streams, one line per thread count"),
    Chart("latency_ccdf.png", chart_latency, "per-token latency CCDF, log-log; the FPGA's fixed band shaded"),
    Chart("server_p99.png", chart_server,
          "server: p99 name latency against offered Poisson load, log-log; the FPGA modelled, the bound dotted"),
]


def draw_charts(ctx: Context, out: Path) -> dict[str, dict]:
    """Every registered chart that has data, into out; {file name: what it plotted}."""
    import matplotlib

    drawn = {}
    with matplotlib.rc_context({"text.parse_math": False}):  # a "$" in a label is a dollar sign
        for chart in CHARTS:
            data = chart.draw(ctx, out / chart.name)
            if data is not None:
                drawn[chart.name] = data
    return drawn


def write_charts(docs, out_dir: str | Path, published: dict | None = None, watts: dict | None = None,
                 entries: list[dict] | None = None, warn=None) -> dict[str, dict]:
    """Draw every chart that has data into out_dir; {file name: what it plotted}. {} without matplotlib."""
    docs = [docs] if isinstance(docs, dict) else list(docs)
    warn = warn or (lambda msg: print(f"microgpt-bench: {msg}", file=sys.stderr))
    if not have_matplotlib():
        warn(MISSING_MATPLOTLIB)
        return {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = entries if entries is not None else build_entries(docs, published, watts)
    return draw_charts(Context(docs, [], entries, published, watts or {}), out)


# ------------------------------------------------------------------ sections


def section_header(ctx: Context, d: "Doc") -> None:
    d.h(1, "microgpt-bench report")
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    n = len(ctx.docs)
    d.p(f"Made {stamp} by microgpt-bench {__version__} from {n} results file{'s' if n != 1 else ''}: " + "; ".join(
        f"{p} ({machine_label(doc, i)})" for i, (p, doc) in enumerate(zip(ctx.paths, ctx.docs))) + ".")
    d.p(f"Reference: {ctx.fpga['name']} at {ctx.fpga['tok_s']:,.0f} tok/s, a published figure "
        f"({ctx.fpga['source'].get('url', 'TALOS-V2')}). Rows are labelled machine · backend [scenario]"
        + ("; rows from other people's published runs start with 'published' and were not measured here."
           if ctx.published else "."))
    if ctx.note:
        d.p(ctx.note)


def section_throughput(ctx: Context, d: "Doc") -> None:
    d.h(2, "Throughput")
    ctx.figure(d, "throughput.png")
    lines = [measured_line(e["label"], e["row"], e["tok_s"], e["source"], e["power"], e["per_watt"])
             for e in plotted(ctx.entries)]
    lines += fpga_lines({"rows": []}, published_label="TALOS-V2 FPGA (published reference)",
                        published_power=ctx.fpga["power"])
    for i, doc in enumerate(ctx.docs):  # talos-emu's cycle model: what the board would do for the same tokens
        lines += fpga_lines(doc, prefix=f"{machine_label(doc, i)} · ")
    d.table(list(COLUMNS), [list(r.values()) for r in throughput_rows(lines, ctx.fpga["tok_s"])],
            numeric={i for i, c in enumerate(COLUMNS) if c in NUMERIC_COLUMNS}, css="rows")
    d.ul(throughput_notes(lines, "each machine's clock estimate (see Machines)"))
    no_figure = [e["label"] for e in ctx.entries if e["status"] == "ok" and not e["tok_s"]]
    if no_figure:
        d.p("Marked ok but with no throughput figure in the file (left out): " + ", ".join(no_figure) + ".")


def section_per_watt(ctx: Context, d: "Doc") -> None:
    d.h(2, "Performance per watt")
    ctx.figure(d, "perf_per_watt.png")
    d.table(["row", "tok/s per W", "watts", "power", "scope", "how the figure was got"],
            [[e["label"], f"{e['per_watt']:,.0f}", f"{e['power']['watts']:.4g}", basis_word(e["power"]),
              e["power"].get("scope", ""), e["power"].get("method", "")] for e in with_power(ctx.entries)],
            numeric={1, 2}, css="rows")
    without = [e["label"] for e in plotted(ctx.entries) if not e["per_watt"]]
    if without:
        d.p("No power figure (left out of the chart; for a row measured here, give one with --watts BACKEND=W): "
            + ", ".join(without) + ".")


def section_scaling(ctx: Context, d: "Doc") -> None:
    series = sweep_series(ctx.docs)
    if not series:
        return
    d.h(2, "Offline scaling")
    ctx.figure(d, "scaling.png")
    d.table(["sweep", "threads", "streams", "tok/s", "vs FPGA"],
            [[s["title"], str(t), str(streams), f"{tok:,.0f}", f"{tok / ctx.fpga['tok_s']:.2f}x"]
             for s in series for t, pts in s["lines"].items() for streams, tok in pts], numeric={1, 2, 3, 4})


def section_not_run(ctx: Context, d: "Doc") -> None:
    bad = [e for e in ctx.measured() if e["status"] != "ok"]
    if bad:
        d.h(2, "Rows that did not run")
        d.table(["row", "status", "reason"], [[e["label"], e["status"], e["row"].get("reason", "")] for e in bad],
                css="rows")


def section_gate(ctx: Context, d: "Doc") -> None:
    d.h(2, "Correctness gate")
    d.p("Before any timing, each backend's logits at every position of the probe names are compared with a "
        "float64 reference; a row is timed only if its worst error is within its precision's tolerance.")
    d.table(["row", "precision", "check", "max abs logit error", "tolerance", "positions", "gate"],
            [_gate_cells(e) for e in ctx.measured()], numeric={3, 4, 5}, css="rows")


def _gate_cells(e: dict) -> list:
    g = e["row"].get("gate")
    if not isinstance(g, dict):
        return [e["label"], e["row"].get("precision", ""), "", "", "", "", "not run"]
    err = _fmt(g.get("max_abs_error"), ".3g")
    if g.get("error_is") and err:
        err += f" ({g['error_is']})"
    verdict = "passed" if g.get("passed") else "FAILED" + (f": {g['failure']}" if g.get("failure") else "")
    return [e["label"], e["row"].get("precision", ""),
            g.get("method") or "max abs logit error vs float64, within tolerance", err,
            "" if g.get("method") else _fmt(g.get("tolerance"), ".3g"), _fmt(g.get("positions"), "d"), verdict]


def section_accuracy(ctx: Context, d: "Doc") -> None:
    rows = [[e["label"], _fmt(a.get("mean_kl"), ".2e"), _fmt(a.get("max_kl"), ".2e"),
             _fmt(a.get("token_differs_share"), ".2%"), a.get("distribution", "")]
            for e in ctx.measured() if isinstance(a := e["row"].get("accuracy"), dict)]
    if rows:
        d.h(2, "Accuracy")
        d.p(describe_accuracy())
        d.table(["row", "mean KL", "max KL", "tokens differ", "draws from"], rows, numeric={1, 2, 3}, css="rows")


def section_machines(ctx: Context, d: "Doc") -> None:
    d.h(2, "Machines")
    for i, (path, doc) in enumerate(zip(ctx.paths, ctx.docs)):
        d.h(3, f"{machine_label(doc, i)} ({path})")
        d.ul(_machine_items(doc.get("machine") or {}, doc.get("config") or {}))
    if ctx.published:
        d.h(3, "Published machines (not measured here)")
        d.ul([f"{k}: {v.get('cpu', '')}" for k, v in ctx.published.get("machines", {}).items()])
        d.h(3, "Published sources")
        d.ul([f"{k}: {v.get('title', '')} — {v.get('url', '')}"
              for k, v in ctx.published.get("sources", {}).items()])


def _machine_items(m: dict, cfg: dict) -> list[str]:
    clock = m.get("clock") if isinstance(m.get("clock"), dict) else {}
    comps = m.get("compilers") if isinstance(m.get("compilers"), dict) else {}
    gpus = [g for g in m.get("gpus") or [] if isinstance(g, dict)]
    items = [f"CPU: {m.get('cpu', '?')} ({m.get('arch', '?')}, {m.get('cores', '?')} logical cores)",
             f"SIMD: {', '.join(map(str, m.get('simd') or [])) or 'none reported'}",
             f"clock: {_fmt(clock.get('ghz'), '.2f', '?')} GHz ({clock.get('method', 'unknown method')})",
             f"OS: {m.get('os', '?')}; Python {m.get('python', '?')}; NumPy {m.get('numpy', '?')}; "
             f"BLAS {m.get('blas', '?')}",
             "compilers: " + ("; ".join(f"{k}: {v.get('version', v.get('command', '?'))}"
                                        for k, v in comps.items() if isinstance(v, dict)) or "none found"),
             "GPUs: " + ("; ".join(f"{g.get('name', '?')} (driver {g.get('driver', '?')}, power limit "
                                   f"{g.get('power_limit_w', '?')} W)" for g in gpus) or "none"),
             f"measured {m.get('date', '?')} with microgpt-bench {m.get('tool_version', '?')}"
             f" (commit {m.get('git_commit') or '?'})"]
    if cfg:
        items.append("run: " + ", ".join(f"{k} {cfg[k]}" for k in ("seconds", "repeats", "seed", "temperature",
                                                                     "sampler", "weights") if k in cfg))
    return items


def section_method(ctx: Context, d: "Doc") -> None:
    d.h(2, "Assumptions and method")
    fpga = ctx.fpga
    items = describe_power() + [f"TALOS-V2: {fpga['tok_s']:,.0f} tok/s (published) at "
                                f"{fpga['power'].get('watts', 2):g} W ({fpga['power'].get('method', 'assumed')})."]
    if ctx.watts:
        items.append("Given with --watts: " + ", ".join(f"{b} = {w:g} W" for b, w in ctx.watts.items())
                     + " (applies to measured-here rows of that backend without a power measurement).")
    measured = ctx.measured()
    reasons = sorted({e["power"].get("unmeasured") for e in measured if e["power"].get("unmeasured")})
    if reasons:
        items.append("Why rows were not measured here: " + "; ".join(map(str, reasons)) + ".")
    for e in measured:
        p = e["power"]
        if _positive(p.get("idle_baseline_w")):
            items.append(f"{e['label']}: idle baseline {p['idle_baseline_w']:.2f} W"
                         + (f", package {p['package_w']:.2f} W" if _positive(p.get("package_w")) else "")
                         + f" ({p.get('scope', '')})")
    if ctx.published:  # in the published file's own words
        methods = dict.fromkeys(str(r["power"]["method"]) for r in ctx.published["rows"]
                                if isinstance(r.get("power"), dict) and r["power"].get("method"))
        items.append("Published rows carry their own source's power figures: " + "; ".join(methods) + ".")
    d.ul(items)


SECTIONS = [section_header, section_throughput, section_latency, section_server, section_per_watt, section_scaling, section_not_run,
            section_gate, section_accuracy, section_machines, section_method]


def _fmt(value, spec: str, none: str = "") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else none


def build_document(ctx: Context) -> "Doc":
    d = Doc()
    for section in SECTIONS:
        section(ctx, d)
    return d


# ------------------------------------------------------------------ the document


MD_SPECIAL = re.compile(r"([\\`*_<>&|~$])")


def md_text(text) -> str:
    """Text as Markdown shows it literally: no HTML, no emphasis or code, no link, one line, a safe table cell."""
    flat = " ".join(str(text).splitlines())
    return MD_SPECIAL.sub(r"\\\1", flat).replace("](", "]\\(")


def markdown_table(headers: list[str], rows: list[list], numeric=frozenset()) -> str:
    """A Markdown table, every cell escaped; the columns numbered in numeric right-aligned."""
    lines = ["| " + " | ".join(map(md_text, headers)) + " |",
             "| " + " | ".join("---:" if i in numeric else "---" for i in range(len(headers))) + " |"]
    return "\n".join(lines + ["| " + " | ".join(map(md_text, r)) + " |" for r in rows])


class Doc:
    """A few block kinds rendered both as Markdown and as HTML, so the two pages agree; both escape all text."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def ul(self, items: list[str]):
        if items:
            self.blocks.append(("ul", items))

    def table(self, headers: list[str], rows: list[list], numeric: set[int] = frozenset(), css: str = ""):
        self.blocks.append(("table", headers, [[_cell(c) for c in r] for r in rows], set(numeric), css))

    def img(self, name: str, alt: str):
        self.blocks.append(("img", name, alt))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + md_text(b[2]))
            elif b[0] == "p":
                out.append(md_text(b[1]))
            elif b[0] == "ul":
                out.append("\n".join(f"- {md_text(i)}" for i in b[1]))
            elif b[0] == "img":
                out.append(f"![{md_text(b[2])}]({b[1]})")
            elif b[0] == "table":
                out.append(markdown_table(*b[1:4]))
        return "\n\n".join(out) + "\n"

    def html(self, title: str, images: dict[str, bytes]) -> str:
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "img":
                data = images.get(b[1])
                if data:
                    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
                    body.append(f'<figure><img src="{src}" alt="{html.escape(b[2])}">'
                                f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
            elif b[0] == "table":
                _, headers, rows, numeric, css = b
                head = "".join(f'<th{" class=num" if i in numeric else ""}>{html.escape(h)}</th>'
                               for i, h in enumerate(headers))
                trs = []
                for r in rows:
                    cls = ""
                    if css and r and str(r[0]).startswith("published"):
                        cls = ' class="published"'
                    if css and r and "TALOS-V2" in str(r[0]):
                        cls = ' class="fpga"'
                    tds = "".join(f'<td{" class=num" if i in numeric else ""}>{html.escape(str(c))}</td>'
                                  for i, c in enumerate(r))
                    trs.append(f"<tr{cls}>{tds}</tr>")
                body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                            f'<tbody>{"".join(trs)}</tbody></table></div>')
        return HTML_PAGE.format(title=html.escape(title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.7em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }}
table {{ border-collapse: collapse; font-size: .9em; margin: .6em 0; }}
th, td {{ border: 1px solid #d0d0d0; padding: .25em .55em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }} td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tbody tr:nth-child(even) {{ background: #fafafa; }}
tr.published td {{ color: #555; font-style: italic; }}
tr.fpga td {{ background: #fdecea; font-weight: 600; }}
.scroll {{ overflow-x: auto; }}
figure {{ margin: 1em 0; }} figure img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
figcaption {{ font-size: .85em; color: #666; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def _cell(value) -> str:
    if value is None:
        return ""
    return str(value)


def write_report(paths: list[str | Path], out_dir: str | Path, with_published: bool = False,
                 watts: dict[str, float] | None = None, warn=None) -> dict[str, Path]:
    """Load results files, write the charts, report.md and report.html into out_dir."""
    warn = warn or (lambda msg: print(f"microgpt-bench: {msg}", file=sys.stderr))
    docs = []
    for p in paths:
        doc = load_results(p)
        doc["_path_stem"] = Path(p).stem
        docs.append(doc)
    rows = sum(len(doc["rows"]) + sum(len(s.get("points") or []) for s in doc["sweeps"]) for doc in docs)
    if rows > MAX_REPORT_ROWS:
        raise ReportError(f"{rows:,} rows and sweep points in {len(docs)} file(s); a report shows at most "
                          f"{MAX_REPORT_ROWS:,} (report fewer files, or split them)")
    published = load_published() if with_published else None
    ctx = Context(docs, [str(p) for p in paths], build_entries(docs, published, watts), published, watts or {})
    for backend in ctx.watts:
        if not any(e["backend"] == backend for e in ctx.measured()):
            warn(f"--watts {backend}=...: no row has backend {backend!r}; ignored")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--out {out}: cannot make the directory ({exc.strerror or exc})") from None
    for chart in CHARTS:  # never leave an older run's chart beside this report
        (out / chart.name).unlink(missing_ok=True)
    if have_matplotlib():
        ctx.charts = draw_charts(ctx, out)
    else:
        warn(MISSING_MATPLOTLIB)
        ctx.note = MISSING_MATPLOTLIB[0].upper() + MISSING_MATPLOTLIB[1:] + "."
    d = build_document(ctx)
    written = {name: out / name for name in ctx.charts}
    (out / "report.md").write_text(d.markdown())
    images = {name: (out / name).read_bytes() for name in ctx.charts}
    (out / "report.html").write_text(d.html("microgpt-bench report", images))
    written["report.md"], written["report.html"] = out / "report.md", out / "report.html"
    return written
