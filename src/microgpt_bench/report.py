"""Reports people look at: charts, a Markdown page and a self-contained HTML page.

    microgpt-bench report RESULTS.json [MORE.json ...] --out DIR [--with-published] [--watts BACKEND=W ...]

writes into DIR
  throughput.png     tok/s of every ok row, sorted, the TALOS-V2 FPGA as a reference line
  perf_per_watt.png  tok/s per watt, each bar marked measured / given / assumed
  scaling.png        offline sweeps: tok/s against streams, one line per thread count
  report.md          the tables, the machines, the correctness gate, the assumptions
  report.html        the same on one page, charts embedded, no external resources, no script

Several results files (machines, runs) merge into one report; rows are labelled
"machine · backend [scenario]". Published figures (data/published.json) join only with
--with-published, and always under the label "published · ...".
The chart functions return what they plotted (labels and values), for the tests.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import statistics
import sys
from pathlib import Path

from . import __version__, scenarios
from .power import DEFAULT_W_PER_CORE, resolve_power
from .results import FPGA_TOK_S, load_results
from .table import modelled_fpga_row, scenario_tag

PUBLISHED_PATH = Path(__file__).resolve().parent / "data" / "published.json"
MISSING_MATPLOTLIB = ("charts not drawn: matplotlib is not installed "
                      "(pip install 'microgpt-bench[charts]'); report.md and report.html have the tables only")
CHART_NAMES = ("throughput.png", "perf_per_watt.png", "scaling.png")
FPGA_COLOUR = "#d62728"
PUBLISHED_COLOUR = "#b8b8b8"
MACHINE_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22"]
HATCH = {"measured": "", "given": "..", "assumed": "///", "none": ""}


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
        mlabel = str(machine.get("label") or doc.get("_path_stem") or f"machine {i + 1}")
        for row in doc.get("rows", []):
            if not isinstance(row, dict):
                continue
            entries.append(_entry(row, mlabel, machine, "measured", i, watts))
    machines = list(dict.fromkeys(e["machine"] for e in entries))  # file order
    for e in entries:
        e["colour"] = MACHINE_COLOURS[machines.index(e["machine"]) % len(MACHINE_COLOURS)]
    seen: dict[str, int] = {}
    for e in entries:  # the same machine, backend and scenario in two files: number the repeats
        n = seen[e["label"]] = seen.get(e["label"], 0) + 1
        if n > 1:
            e["label"] += f" #{n}"
    if published:
        for row in published["rows"]:
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
    per_watt = tok / power["watts"] if tok and (power.get("watts") or 0) > 0 else None
    return {"label": f"{mlabel} · {backend} [{tag}]", "machine": mlabel, "backend": backend,
            "scenario": scenarios.for_row(row).name, "tag": tag, "status": row.get("status", "failed"),
            "source": source, "tok_s": tok, "power": power, "per_watt": per_watt, "row": row, "doc": doc_index}


def plotted(entries: list[dict]) -> list[dict]:
    """Entries with a throughput figure, fastest first."""
    return sorted((e for e in entries if e["tok_s"]), key=lambda e: -e["tok_s"])


# ------------------------------------------------------------------ charts


def _figure_tools():
    """(Figure, FigureCanvasAgg, Patch, Line2D), or raise ImportError when matplotlib is missing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return Figure, FigureCanvasAgg, Patch, Line2D


def have_matplotlib() -> bool:
    try:
        _figure_tools()
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


def _bar_chart(entries, values, path, title, xlabel, ref_value, ref_label, value_text, with_basis):
    Figure, FigureCanvasAgg, Patch, Line2D = _figure_tools()
    from matplotlib import transforms

    colours = _colours(entries)
    labels = [e["label"] for e in entries]
    n = len(labels)
    longest = max([len(s) for s in labels] + [10])
    fig = Figure(figsize=(max(10.0, 6.5 + longest * 0.075), 1.9 + 0.34 * max(n, 1)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    span = [v for v in values if v] + [ref_value]
    log = bool(values) and max(span) / min(span) > 100
    ys = list(range(n))
    bar_colours = [e.get("colour", PUBLISHED_COLOUR) if e["source"] == "measured" else PUBLISHED_COLOUR
                   for e in entries]
    bars = ax.barh(ys, values, color=bar_colours, edgecolor="#333333", linewidth=0.6, height=0.7, zorder=2)
    if with_basis:
        for bar, e in zip(bars, entries):
            bar.set_hatch(HATCH.get(e["power"].get("basis"), ""))
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()  # fastest at the top
    for y, v, e in zip(ys, values, entries):
        ax.text(v * (1.06 if log else 1.0) + (0 if log else max(span) * 0.01), y, value_text(e, v),
                va="center", ha="left", fontsize=8, zorder=4,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.4})
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(span) / 2.5, max(span) * 12)
    else:
        ax.set_xlim(0, max(span) * 1.45)
    ax.axvline(ref_value, color=FPGA_COLOUR, linestyle="--", linewidth=2.2, zorder=3)
    lo, hi = ax.get_xlim()
    where = ((math.log(ref_value) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log
             else (ref_value - lo) / (hi - lo))
    right_half = where > 0.5  # the label goes on the side of the line with room for it
    ax.text(ref_value, -0.9 if n else 0, f" {ref_label} " if right_half else f" {ref_label}", color=FPGA_COLOUR,
            fontsize=9, fontweight="bold", va="bottom", ha="right" if right_half else "left", zorder=4)
    ax.set_ylim(n - 0.5 if n else 0.5, -1.6)
    ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
    ax.set_title(title, fontsize=12, loc="left")
    ax.grid(axis="x", color="#dddddd", zorder=0)
    ax.xaxis.set_major_formatter(_thousands_formatter())
    handles = [Patch(facecolor=c, edgecolor="#333333", label=m) for m, c in colours.items()]
    if any(e["source"] == "published" for e in entries):
        handles.append(Patch(facecolor=PUBLISHED_COLOUR, edgecolor="#333333", label="published (not measured here)"))
    if with_basis:
        for basis, name in (("measured", "power measured"), ("given", "power given (--watts)"),
                            ("assumed", "power assumed")):
            if any(e["power"].get("basis") == basis for e in entries):
                handles.append(Patch(facecolor="white", edgecolor="#333333", hatch=HATCH[basis], label=name))
    handles.append(Line2D([0], [0], color=FPGA_COLOUR, linestyle="--", linewidth=2.2, label=ref_label))
    below = transforms.offset_copy(ax.transAxes, fig=fig, x=0, y=-0.55, units="inches")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below,
              ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    return {"labels": labels, "values": list(values), "log": log, "reference": ref_value, "path": str(path)}


def _thousands_formatter():
    from matplotlib.ticker import FuncFormatter

    def fmt(x, _pos):
        if x >= 1e6:
            return f"{x / 1e6:g}M"
        if x >= 1e3:
            return f"{x / 1e3:g}k"
        return f"{x:g}"
    return FuncFormatter(fmt)


def plot_throughput(entries: list[dict], path: str | Path, fpga: dict | None = None) -> dict:
    """Horizontal bars of tok/s, sorted; returns {"labels", "values", "log", "reference", "path"}."""
    fpga = fpga or fpga_reference()
    rows = plotted(entries)
    values = [e["tok_s"] for e in rows]
    return _bar_chart(rows, values, path, "microGPT inference throughput (batch 1 unless offline)",
                      "tokens per second", fpga["tok_s"], f"TALOS-V2 FPGA: {fpga['tok_s']:,.0f} tok/s",
                      lambda e, v: f"{v:,.0f}  ({v / fpga['tok_s']:.2f}x FPGA)", with_basis=False)


def plot_perf_per_watt(entries: list[dict], path: str | Path, fpga: dict | None = None) -> dict:
    """tok/s per watt for rows with a power figure; returns labels, values and each bar's basis."""
    fpga = fpga or fpga_reference()
    rows = sorted((e for e in entries if e["per_watt"]), key=lambda e: -e["per_watt"])
    values = [e["per_watt"] for e in rows]
    fpga_w = fpga["power"].get("watts") or 2.0
    ref = fpga["tok_s"] / fpga_w
    data = _bar_chart(rows, values, path, "tokens per second per watt",
                      "tokens per second per watt", ref,
                      f"TALOS-V2 FPGA: {ref:,.0f} tok/s/W ({fpga['power'].get('basis', 'assumed')} {fpga_w:g} W)",
                      lambda e, v: f"{v:,.0f}  [{_basis_word(e['power'])} {e['power']['watts']:.4g} W]",
                      with_basis=True)
    data["basis"] = [e["power"].get("basis") for e in rows]
    data["watts"] = [e["power"].get("watts") for e in rows]
    return data


def _basis_word(power: dict) -> str:
    return {"measured": "measured", "given": "given", "assumed": "assumed"}.get(power.get("basis"), "?")


def sweep_series(docs: list[dict]) -> list[dict]:
    """[{"title", "machine", "backend", "lines": {threads: [(streams, tok_s), ...]}}] from every sweep."""
    out = []
    for i, doc in enumerate(docs):
        mlabel = str((doc.get("machine") or {}).get("label") or doc.get("_path_stem") or f"machine {i + 1}")
        for sweep in doc.get("sweeps") or []:
            if not isinstance(sweep, dict):
                continue
            lines: dict[int, list] = {}
            for p in sweep.get("points") or []:
                tok = p.get("tok_s")
                if isinstance(tok, dict):
                    tok = tok.get("median")
                if isinstance(tok, (int, float)) and tok > 0 and p.get("streams"):
                    lines.setdefault(int(p.get("threads") or 1), []).append((int(p["streams"]), float(tok)))
            if lines:
                backend = sweep.get("backend", "?")
                out.append({"title": f"{mlabel} · {backend} [offline sweep]", "machine": mlabel, "backend": backend,
                            "lines": {t: sorted(pts) for t, pts in sorted(lines.items())}})
    return out


def plot_scaling(series: list[dict], path: str | Path, fpga: dict | None = None) -> dict:
    """tok/s against streams, one line per threads count, one panel per sweep."""
    fpga = fpga or fpga_reference()
    Figure, FigureCanvasAgg, _, _ = _figure_tools()
    n = len(series)
    fig = Figure(figsize=(9, 4.6 * n), dpi=110)
    FigureCanvasAgg(fig)
    plotted_lines = []
    for k, s in enumerate(series):
        ax = fig.add_subplot(n, 1, k + 1)
        for t, pts in s["lines"].items():
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker="o", linewidth=1.8, label=f"{t} thread{'s' if t > 1 else ''}")
            plotted_lines.append({"title": s["title"], "threads": t, "streams": xs, "tok_s": ys})
        ax.axhline(fpga["tok_s"], color=FPGA_COLOUR, linestyle="--", linewidth=2,
                   label=f"TALOS-V2 FPGA: {fpga['tok_s']:,.0f} tok/s")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("independent streams")
        ax.set_ylabel("tokens per second (all streams)")
        ax.set_title(s["title"], fontsize=11, loc="left")
        ax.grid(True, which="major", color="#dddddd")
        ax.yaxis.set_major_formatter(_thousands_formatter())
        ax.xaxis.set_major_formatter(_thousands_formatter())
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    return {"lines": plotted_lines, "path": str(path)}


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
    fpga = fpga_reference()
    charts = {"throughput.png": plot_throughput(entries, out / "throughput.png", fpga),
              "perf_per_watt.png": plot_perf_per_watt(entries, out / "perf_per_watt.png", fpga)}
    series = sweep_series(docs)
    if series:
        charts["scaling.png"] = plot_scaling(series, out / "scaling.png", fpga)
    return charts


# ------------------------------------------------------------------ the document


class Doc:
    """A few block kinds rendered both as Markdown and as HTML, so the two pages agree."""

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
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})")
            elif b[0] == "table":
                _, headers, rows, numeric, _ = b
                esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
                         "| " + " | ".join("---:" if i in numeric else "---" for i in range(len(headers))) + " |"]
                lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
                out.append("\n".join(lines))
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


def _fmt(value, spec: str = ",.0f", none: str = "") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else none


def _power_text(power: dict) -> tuple[str, str]:
    w = power.get("watts")
    if not isinstance(w, (int, float)) or w <= 0:
        return "", "none"
    return f"{w:.4g}", _basis_word(power)


def build_document(docs: list[dict], entries: list[dict], paths: list[str], published: dict | None,
                   charts: dict, watts: dict | None, chart_note: str | None) -> Doc:
    fpga = fpga_reference()
    d = Doc()
    d.h(1, "microgpt-bench report")
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    d.p(f"Made {stamp} by microgpt-bench {__version__} from {len(docs)} results file"
        f"{'s' if len(docs) != 1 else ''}: " + "; ".join(
            f"{p} ({(doc.get('machine') or {}).get('label', '?')})" for p, doc in zip(paths, docs)) + ".")
    d.p(f"Reference: {fpga['name']} at {fpga['tok_s']:,.0f} tok/s, a published figure "
        f"({fpga['source'].get('url', 'TALOS-V2')}). Rows are labelled machine · backend [scenario]"
        + ("; rows from other people's published runs start with 'published' and were not measured here."
           if published else "."))
    if chart_note:
        d.p(chart_note)

    # ---- throughput
    d.h(2, "Throughput")
    if "throughput.png" in charts:
        d.img("throughput.png", "tokens per second, the TALOS-V2 FPGA as the dashed reference line")
    ranked = plotted(entries)
    notes = ["tok/s is the median over the repeats; spread is (max - min) / median; ! marks a spread over 10%.",
             "offline rows: tok/s summed over all streams; cycles/token there is per core (clock x threads / tok/s).",
             "cycles/token comes from each machine's clock estimate (see Machines)."]
    fw, fb = _power_text(fpga["power"])
    refs = [(fpga["tok_s"], ["TALOS-V2 FPGA (published reference)", "", "published", _fmt(fpga["tok_s"]), "",
                             _fmt(1e9 / fpga["tok_s"], ",.1f"), "", "1.00x", fw, fb,
                             _fmt(fpga["tok_s"] / fpga["power"]["watts"]) if fw else ""])]
    for i, doc in enumerate(docs):  # talos-emu's cycle model: what the board would do for the same tokens
        modelled = modelled_fpga_row(doc)
        if modelled:
            mlabel = (doc.get("machine") or {}).get("label") or doc.get("_path_stem") or f"machine {i + 1}"
            tok = modelled["tok_s"]["median"]
            refs.append((tok, [f"{mlabel} · {modelled['backend']}", "", "modelled", _fmt(tok), "",
                               _fmt(1e9 / tok, ",.1f"), "", f"{tok / fpga['tok_s']:.2f}x", "", "", ""]))
            notes.append(f"{mlabel} · TALOS-V2 modelled: {modelled['how']} (a model, not a measurement; "
                         "not charted).")
    refs.sort(key=lambda r: -r[0])
    table = []
    for rank, e in enumerate(ranked, 1):
        while refs and refs[0][0] > e["tok_s"]:
            table.append(refs.pop(0)[1])
        row = e["row"]
        tok = row.get("tok_s") if isinstance(row.get("tok_s"), dict) else {}
        cyc = scenarios.for_row(row).cycles_per_token(row)
        w, basis = _power_text(e["power"])
        flag = " !" if row.get("unstable") else ""
        table.append([e["label"], str(rank), e["source"], _fmt(e["tok_s"]) + flag,
                      _fmt(tok.get("spread"), ".1%"), _fmt(1e9 / e["tok_s"], ",.1f"), _fmt(cyc),
                      f"{e['tok_s'] / fpga['tok_s']:.2f}x", w, basis, _fmt(e["per_watt"])])
    table += [r for _, r in refs]
    d.table(["row", "#", "source", "tok/s", "spread", "ns/token", "cycles/token", "vs FPGA",
             "watts", "power", "tok/s per W"], table, numeric={1, 3, 4, 5, 6, 7, 8, 10}, css="rows")
    d.ul(notes)
    no_figure = [e["label"] for e in entries if e["status"] == "ok" and not e["tok_s"]]
    if no_figure:
        d.p("Marked ok but with no throughput figure in the file (left out): " + ", ".join(no_figure) + ".")

    # ---- per watt
    d.h(2, "Performance per watt")
    if "perf_per_watt.png" in charts:
        d.img("perf_per_watt.png", "tokens per second per watt; solid bars measured, hatched assumed, "
                                   "dotted given with --watts")
    without = [e["label"] for e in ranked if not e["per_watt"]]
    pw_rows = []
    for e in sorted((e for e in entries if e["per_watt"]), key=lambda e: -e["per_watt"]):
        p = e["power"]
        pw_rows.append([e["label"], _fmt(e["per_watt"]), f"{p['watts']:.4g}", _basis_word(p),
                        p.get("scope", ""), p.get("method", "")])
    d.table(["row", "tok/s per W", "watts", "power", "scope", "how the figure was got"], pw_rows,
            numeric={1, 2}, css="rows")
    if without:
        d.p("No power figure (left out of the chart; for a row measured here, give one with --watts BACKEND=W): " + ", ".join(without) + ".")

    # ---- sweeps
    series = sweep_series(docs)
    if series:
        d.h(2, "Offline scaling")
        if "scaling.png" in charts:
            d.img("scaling.png", "offline throughput against the number of streams, one line per thread count")
        sw_rows = []
        for s in series:
            for t, pts in s["lines"].items():
                for streams, tok in pts:
                    sw_rows.append([s["title"], str(t), str(streams), _fmt(tok), f"{tok / fpga['tok_s']:.2f}x"])
        d.table(["sweep", "threads", "streams", "tok/s", "vs FPGA"], sw_rows, numeric={1, 2, 3, 4})

    # ---- rows that did not run
    bad = [e for e in entries if e["source"] == "measured" and e["status"] != "ok"]
    if bad:
        d.h(2, "Rows that did not run")
        d.table(["row", "status", "reason"], [[e["label"], e["status"], e["row"].get("reason", "")] for e in bad],
                css="rows")

    # ---- correctness gate
    d.h(2, "Correctness gate")
    d.p("Before any timing, each backend's logits at every position of the probe names are compared with a "
        "float64 reference; a row is timed only if its worst error is within its precision's tolerance.")
    gate_rows = []
    for e in entries:
        g = e["row"].get("gate") if e["source"] == "measured" else None
        if isinstance(g, dict):
            err = _fmt(g.get("max_abs_error"), ".3g")
            if g.get("error_is") and err:
                err += f" ({g['error_is']})"
            gate_rows.append([e["label"], e["row"].get("precision", ""),
                              g.get("method") or "max abs logit error vs float64, within tolerance", err,
                              "" if g.get("method") else _fmt(g.get("tolerance"), ".3g"),
                              _fmt(g.get("positions"), "d"),
                              "passed" if g.get("passed") else "FAILED" + (f": {g['failure']}" if g.get("failure")
                                                                           else "")])
        elif e["source"] == "measured":
            gate_rows.append([e["label"], e["row"].get("precision", ""), "", "", "", "", "not run"])
    d.table(["row", "precision", "check", "max abs logit error", "tolerance", "positions", "gate"], gate_rows,
            numeric={3, 4, 5}, css="rows")

    # ---- accuracy (run --accuracy)
    acc_rows = [[e["label"], _fmt(a.get("mean_kl"), ".2e"), _fmt(a.get("max_kl"), ".2e"),
                 _fmt(100 * a["token_differs_share"], ".2f") + "%" if a.get("token_differs_share") is not None
                 else "", a.get("distribution", "")]
                for e in entries if e["source"] == "measured" and isinstance(a := e["row"].get("accuracy"), dict)]
    if acc_rows:
        d.h(2, "Accuracy")
        d.p("Over a fixed 2,000-step float64 reference generation: the KL divergence from the model's "
            "softmax(logits/T) to the distribution each backend's sampler draws from, and the share of steps "
            "where the same uniform draw picks a different token.")
        d.table(["row", "mean KL", "max KL", "tokens differ", "draws from"], acc_rows, numeric={1, 2, 3},
                css="rows")

    # ---- machines
    d.h(2, "Machines")
    for path, doc in zip(paths, docs):
        m, cfg = doc.get("machine") or {}, doc.get("config") or {}
        d.h(3, f"{m.get('label', '?')} ({path})")
        clock = m.get("clock") or {}
        comps = m.get("compilers") or {}
        items = [f"CPU: {m.get('cpu', '?')} ({m.get('arch', '?')}, {m.get('cores', '?')} logical cores)",
                 f"SIMD: {', '.join(m.get('simd') or []) or 'none reported'}",
                 f"clock: {_fmt(clock.get('ghz'), '.2f', '?')} GHz ({clock.get('method', 'unknown method')})",
                 f"OS: {m.get('os', '?')}; Python {m.get('python', '?')}; NumPy {m.get('numpy', '?')}; "
                 f"BLAS {m.get('blas', '?')}",
                 "compilers: " + ("; ".join(f"{k}: {v.get('version', v.get('command', '?'))}"
                                            for k, v in comps.items() if isinstance(v, dict)) or "none found"),
                 "GPUs: " + ("; ".join(f"{g.get('name', '?')} (driver {g.get('driver', '?')}, power limit "
                                       f"{g.get('power_limit_w', '?')} W)" for g in m.get("gpus") or [])
                             or "none"),
                 f"measured {m.get('date', '?')} with microgpt-bench {m.get('tool_version', '?')}"
                 f" (commit {m.get('git_commit') or '?'})"]
        if cfg:
            items.append("run: " + ", ".join(f"{k} {cfg[k]}" for k in ("seconds", "repeats", "seed", "temperature",
                                                                         "sampler", "weights") if k in cfg))
        d.ul(items)
    if published:
        d.h(3, "Published machines (not measured here)")
        d.ul([f"{k}: {v.get('cpu', '')}" for k, v in published.get("machines", {}).items()])
        d.h(3, "Published sources")
        d.ul([f"{k}: {v.get('title', '')} — {v.get('url', '')}" for k, v in published.get("sources", {}).items()])

    # ---- assumptions
    d.h(2, "Assumptions and method")
    defaults = "; ".join(f"{fam}: {w:g} W" for fam, (w, _) in DEFAULT_W_PER_CORE.items())
    items = [
        "Power per row, first that applies: (1) measured during the timed repeats; (2) --watts BACKEND=W given to "
        "the report; (3) an assumed default. A measurement is never overridden.",
        "Measured on Linux from the RAPL package energy counters (/sys/class/powercap/intel-rapl:N, AMD too on "
        "recent kernels) read before and after the timed window, counter wraparound handled. That counter covers "
        "the whole CPU package (all cores, uncore, anything else running), so an idle baseline sampled just before "
        "the window is subtracted; both figures are kept in the results file.",
        "Measured for NVIDIA GPU rows from the board's power draw (NVML, or nvidia-smi power.draw every 100 ms) "
        "averaged over the timed window: the whole board, nothing subtracted.",
        "Not measured on macOS (powermetrics needs root) nor where RAPL is absent or unreadable (most VMs).",
        f"Assumed defaults, watts per busy core times the row's threads: {defaults}. A GPU row with no "
        "measurement assumes the board's power limit (an upper bound) when known.",
        f"TALOS-V2: {fpga['tok_s']:,.0f} tok/s (published) at {fpga['power'].get('watts', 2):g} W "
        f"({fpga['power'].get('method', 'assumed')}).",
    ]
    if watts:
        items.append("Given with --watts: " + ", ".join(f"{b} = {w:g} W" for b, w in watts.items())
                     + " (applies to measured-here rows of that backend without a power measurement).")
    reasons = sorted({e["power"].get("unmeasured") for e in entries
                      if e["source"] == "measured" and e["power"].get("unmeasured")})
    if reasons:
        items.append("Why rows were not measured here: " + "; ".join(reasons) + ".")
    idles = [(e["label"], e["power"]) for e in entries if e["power"].get("idle_baseline_w") is not None
             and e["source"] == "measured"]
    for label, p in idles:
        items.append(f"{label}: idle baseline {p['idle_baseline_w']:.2f} W"
                     + (f", package {p['package_w']:.2f} W" if p.get("package_w") is not None else "")
                     + f" ({p.get('scope', '')})")
    if published:
        items.append("Published rows carry their own source's assumptions: ~5 W per Apple P-core, ~3 W per Grace "
                     "core, 19.96 W measured on Blackwell for the persistent kernel, ~2 W for the FPGA.")
    d.ul(items)
    return d


def write_report(paths: list[str | Path], out_dir: str | Path, with_published: bool = False,
                 watts: dict[str, float] | None = None, warn=None) -> dict[str, Path]:
    """Load results files, write the charts, report.md and report.html into out_dir."""
    warn = warn or (lambda msg: print(f"microgpt-bench: {msg}", file=sys.stderr))
    docs = []
    for p in paths:
        doc = load_results(p)
        doc["_path_stem"] = Path(p).stem
        docs.append(doc)
    published = load_published() if with_published else None
    entries = build_entries(docs, published, watts)
    for backend in watts or {}:
        if not any(e["backend"] == backend and e["source"] == "measured" for e in entries):
            warn(f"--watts {backend}=...: no row has backend {backend!r}; ignored")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--out {out}: cannot make the directory ({exc.strerror or exc})") from None
    for name in CHART_NAMES:  # never leave an older run's chart beside this report
        (out / name).unlink(missing_ok=True)
    charts = write_charts(docs, out, published, watts, entries=entries, warn=warn)
    note = None if charts or have_matplotlib() else MISSING_MATPLOTLIB[0].upper() + MISSING_MATPLOTLIB[1:] + "."
    d = build_document(docs, entries, [str(p) for p in paths], published, charts, watts, note)
    written = {name: out / name for name in charts}
    (out / "report.md").write_text(d.markdown())
    images = {name: (out / name).read_bytes() for name in charts}
    (out / "report.html").write_text(d.html("microgpt-bench report", images))
    written["report.md"], written["report.html"] = out / "report.md", out / "report.html"
    return written
