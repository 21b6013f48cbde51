"""Tables of a run. One throughput table serves the terminal (format_table) and the report
(report.py renders the same rows as Markdown and HTML): build lines with measured_line /
reference_line, turn them into cells with throughput_rows, notes with throughput_notes.
"""
from __future__ import annotations

from . import scenarios
from .results import FPGA_TOK_S, UNSTABLE_SPREAD, row_clock_ghz

COLUMNS = ("row", "#", "source", "tok/s", "spread", "ns/token", "cycles/token", "vs FPGA",
           "watts", "power", "tok/s per W")
TERMINAL_COLUMNS = ("row", "tok/s", "spread", "ns/token", "cycles/token", "vs FPGA")
NUMERIC_COLUMNS = frozenset({"#", "tok/s", "spread", "ns/token", "cycles/token", "vs FPGA", "watts",
                             "tok/s per W"})
TERMINAL_TITLES = {"row": "implementation"}


def scenario_tag(row: dict) -> str:
    """The row's scenario as its label shows it: 'single-stream', 'offline NxTt', ..."""
    return scenarios.for_row(row).tag(row)


def row_label(row: dict, with_machine: bool = False) -> str:
    label = row["backend"]
    if not scenarios.for_row(row).is_default:
        label += f" [{scenario_tag(row)}]"
    if with_machine and row.get("machine"):
        label = f"{row['machine']} · {label}"
    return label


def modelled_fpga_row(results: dict) -> dict | None:
    """The FPGA's tok/s predicted by its cycle model for talos-emu's own run, if one ran."""
    for r in results["rows"]:
        info = r.get("info") or {}
        if r.get("status") == "ok" and info.get("fpga_tokens_per_s"):
            mhz = info.get("fpga_mhz", 56.25)
            how = (f"{info.get('fpga_cycles', '?'):,} board cycles for the {r['backend']} run's tokens "
                   f"(cycle model: 868 + 20*pos a step) at {mhz} MHz") if isinstance(
                       info.get("fpga_cycles"), int) else f"cycle model at {mhz} MHz"
            return {"backend": f"TALOS-V2 (FPGA, modelled, {mhz:g} MHz)", "fpga": True,
                    "tok_s": {"median": info["fpga_tokens_per_s"]}, "how": how}
    return None


# ------------------------------------------------------------------ lines and cells


def measured_line(label: str, row: dict, tok_s: float, source: str = "measured", power: dict | None = None,
                  per_watt: float | None = None) -> dict:
    """A table line for a timed row (tok_s: its median)."""
    scenario = scenarios.for_row(row)
    tok = row.get("tok_s") if isinstance(row.get("tok_s"), dict) else {}
    return {"label": label, "tok_s": tok_s, "source": source, "spread": tok.get("spread"),
            "note": scenario.table_note(), "cycles": scenario.cycles_per_token(row),
            "unstable": bool(row.get("unstable")), "power": power or {}, "per_watt": per_watt, "reference": False}


def reference_line(label: str, tok_s: float, source: str, power: dict | None = None, how: str = "") -> dict:
    """A line that is not a row of this run: the published FPGA figure, or its cycle model."""
    watts = (power or {}).get("watts")
    return {"label": label, "tok_s": tok_s, "source": source, "spread": None, "note": None, "cycles": None,
            "unstable": False, "power": power or {}, "per_watt": tok_s / watts if _positive(watts) else None,
            "reference": True, "how": how}


def fpga_lines(results: dict, prefix: str = "", published_label: str | None = None,
               published_power: dict | None = None) -> list[dict]:
    """The published TALOS-V2 line (when published_label is given) and the modelled one (if talos-emu ran)."""
    lines = [reference_line(published_label, FPGA_TOK_S, "published", published_power)] if published_label else []
    modelled = modelled_fpga_row(results)
    if modelled:
        lines.append(reference_line(prefix + modelled["backend"], modelled["tok_s"]["median"], "modelled",
                                    how=modelled["how"]))
    return lines


def throughput_rows(lines: list[dict], fpga_tok_s: float = FPGA_TOK_S) -> list[dict[str, str]]:
    """Every line as {column: text}, fastest first; measured rows ranked, reference lines not."""
    rows, rank = [], 0
    for line in sorted(lines, key=lambda x: -x["tok_s"]):
        tok = line["tok_s"]
        rank += not line["reference"]
        watts = line["power"].get("watts")
        rows.append({"row": line["label"], "#": "" if line["reference"] else str(rank), "source": line["source"],
                     "tok/s": f"{tok:,.0f}" + (" !" if line["unstable"] else ""),
                     "spread": _fmt(line["spread"], ".1%"), "ns/token": f"{1e9 / tok:,.1f}",
                     "cycles/token": _fmt(line["cycles"], ",.0f", "" if line["reference"] else "?"),
                     "vs FPGA": f"{tok / fpga_tok_s:.2f}x",
                     "watts": f"{watts:.4g}" if _positive(watts) else "",
                     "power": basis_word(line["power"]) if _positive(watts) else "",
                     "tok/s per W": _fmt(line["per_watt"], ",.0f")})
    return rows


def throughput_notes(lines: list[dict], clock: str) -> list[str]:
    """What the table's marks and columns mean, for the lines it has; clock: where cycles/token came from."""
    notes = [f"TALOS-V2 modelled: {x['how']} (a model, not a measurement)" for x in lines if x.get("how")]
    if any(x["unstable"] for x in lines):
        notes.append(f"! unstable: repeats spread more than {UNSTABLE_SPREAD:.0%} (a busy machine?); "
                     "rerun for firmer figures")
    notes += list(dict.fromkeys(x["note"] for x in lines if x["note"]))  # each scenario's own, once
    notes.append(f"cycles/token from {clock}")
    notes.append("spread: (max - min) / median over the repeats; tok/s is the median")
    return notes


def basis_word(power: dict) -> str:
    return {"measured": "measured", "given": "given", "assumed": "assumed"}.get(power.get("basis"), "?")


def _fmt(value, spec: str, none: str = "") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else none


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


# ------------------------------------------------------------------ the terminal


def format_columns(rows: list[dict[str, str]], columns, titles: dict[str, str] | None = None,
                   numeric=NUMERIC_COLUMNS) -> list[str]:
    """Aligned text lines: a header, a rule, one line per row (the numeric columns right-aligned)."""
    titles = titles or {}
    heads = [titles.get(c, c) for c in columns]
    widths = [max([len(h)] + [len(r[c]) for r in rows]) for h, c in zip(heads, columns)]

    def line(cells):
        return "  ".join(cell.rjust(w) if c in numeric else cell.ljust(w)
                         for cell, w, c in zip(cells, widths, columns)).rstrip()
    head = line(heads)
    return [head, "-" * len(head)] + [line([r[c] for c in columns]) for r in rows]


def short_reason(reason: str) -> str:
    """The gist of an unavailable row's reason, for grouping: up to the first ':', ' (' or ';'
    ('no NVIDIA driver: libcuda.so.1 cannot be loaded (...)' -> 'no NVIDIA driver')."""
    text = " ".join(str(reason or "unavailable").split())
    cut = min((i for i in (text.find(": "), text.find(" ("), text.find("; ")) if i > 0), default=len(text))
    return text[:cut][:80]


def not_run_footer(rows: list[dict]) -> str | None:
    """'not run here: a, b (reason); c (other reason)': the rows that cannot run on this machine,
    grouped by reason; the results file keeps each row's full reason."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        names = groups.setdefault(short_reason(r.get("reason", "")), [])
        if row_label(r) not in names:
            names.append(row_label(r))
    if not groups:
        return None
    return "not run here: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in groups.items())


def floor_notes(rows: list[dict]) -> list[str]:
    """A note per native row: its cycles/token against the floor set by the measured peak."""
    notes = []
    for r in rows:
        info = r.get("info") or {}
        floor = info.get("floor_cycles_per_token")
        cyc = scenarios.for_row(r).cycles_per_token(r)
        if floor and cyc:
            peak = info["floor_peak"]
            unit = {"fp32": "fp32 FMA lanes", "int16": "int16 multiply-adds"}.get(peak["kind"], peak["kind"])
            notes.append(f"floor: {row_label(r)} {cyc:,.0f} cycles/tok = {cyc / floor:.2f}x its floor of "
                         f"{floor:,.0f} ({info['macs_per_token']:,.0f} multiply-adds/tok at "
                         f"{peak['per_cycle']:g} {unit} a cycle, {peak['by']})")
    return notes


def format_table(results: dict, with_machine: bool = False) -> str:
    ok = [r for r in results["rows"] if r.get("status") == "ok" and (r.get("tok_s") or {}).get("median")]
    unavailable = [r for r in results["rows"] if r.get("status") == "unavailable"]
    bad = [r for r in results["rows"] if r.get("status") not in ("ok", "unavailable")]
    lines = [measured_line(row_label(r, with_machine), r, r["tok_s"]["median"]) for r in ok]
    lines += fpga_lines(results, published_label="TALOS-V2 (FPGA, 56 MHz)")
    rows = throughput_rows(lines)
    for r in rows:  # the digits of flagged and unflagged rows line up
        r["tok/s"] += "" if r["tok/s"].endswith("!") else "  "
    text = format_columns(rows, TERMINAL_COLUMNS, TERMINAL_TITLES)
    width = max([len(x["label"]) for x in lines] + [len("implementation")])
    text += [f"{row_label(r, with_machine):<{width}}  {r.get('status', 'failed').upper():>13}  {r.get('reason', '')}"
             for r in bad]
    footer = [not_run_footer(unavailable)] if unavailable else []
    return "\n".join(text + [""] + footer + floor_notes(ok) + clock_moved_notes(ok) +
                     throughput_notes(lines, clock_basis(results, ok)))


def clock_basis(results: dict, rows: list[dict]) -> str:
    """Where the cycles/token figures came from: each row's own clock, else the run's."""
    clock = results.get("machine", {}).get("clock") or {}
    run = (f"a {clock['ghz']:.2f} GHz clock estimate ({clock.get('method', '')})" if clock.get("ghz")
           else "no clock estimate (? where unknown)")
    own = [c["ghz"] for c in (r.get("cycles_clock") for r in rows)
           if isinstance(c, dict) and c.get("measured") == "beside the row" and _positive(c.get("ghz"))]
    if not own:
        return run
    span = f"{min(own):.2f} GHz" if max(own) - min(own) < 0.005 else f"{min(own):.2f}-{max(own):.2f} GHz"
    return f"each row's clock, a dependent add chain just before and after its timing ({span}); the run's start: {run}"


def clock_moved_notes(rows: list[dict]) -> list[str]:
    moved = [f"{row_label(r)} ({r['clock_ghz']['before']:.2f} -> {r['clock_ghz']['after']:.2f} GHz)"
             for r in rows if r.get("clock_moved") is True and row_clock_ghz(r)]
    return [f"clock moved by over 5% during: {', '.join(moved)}; their cycles/token are suspect"] if moved else []


def format_accuracy(results: dict) -> str:
    """Accuracy table: KL(model || backend's sampling distribution), differing-token share."""
    rows = [r for r in results["rows"] if r.get("accuracy")]
    if not rows:
        return "accuracy: no rows measured"
    width = max(len(row_label(r)) for r in rows + [{"backend": "implementation"}])
    steps = rows[0]["accuracy"]["steps"]
    lines = [f"accuracy vs the float64 model over {steps:,} steps (same uniform draw for both)",
             f"{'implementation':<{width}}  {'mean KL':>10}  {'max KL':>10}  {'tokens differ':>13}  "
             f"{'sampler off':>11}  draws from",
             "-" * (width + 73)]
    for r in rows:
        a = r["accuracy"]
        sampler = a.get("sampler")
        off = f"{sampler['differs_share']:>10.2%}" if sampler else f"{'-':>10}"
        lines.append(f"{row_label(r):<{width}}  {a['mean_kl']:>10.2e}  {a['max_kl']:>10.2e}  "
                     f"{a['token_differs_share']:>12.2%}  {off}   {a['distribution']}")
    return "\n".join(lines)
