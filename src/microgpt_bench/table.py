"""The text table of a run, in the original write-up's shape plus cycles/token."""
from __future__ import annotations

from . import scenarios
from .results import FPGA_TOK_S


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


def format_table(results: dict, with_machine: bool = False) -> str:
    ok = [r for r in results["rows"] if r.get("status") == "ok"]
    bad = [r for r in results["rows"] if r.get("status") != "ok"]
    fpga = [{"backend": "TALOS-V2 (FPGA, 56 MHz)", "fpga": True, "tok_s": {"median": FPGA_TOK_S}}]
    modelled = modelled_fpga_row(results)
    if modelled:
        fpga.append(modelled)
    ordered = sorted(ok + fpga, key=lambda r: -r["tok_s"]["median"])
    width = max([len(row_label(r, with_machine)) for r in ordered + bad] + [24])
    head = f"{'implementation':<{width}}  {'tok/s':>13}  {'spread':>7}  {'ns/tok':>9}  {'cycles/tok':>10}  {'vs FPGA':>9}"
    lines = [head, "-" * len(head)]
    for r in ordered:
        med = r["tok_s"]["median"]
        if r.get("fpga"):
            lines.append(f"{r['backend']:<{width}}  {med:>13,.0f}  {'':>7}  {1e9 / med:>9,.0f}  {'':>10}  "
                         f"{med / FPGA_TOK_S:>8.2f}x")
            continue
        cyc = scenarios.for_row(r).cycles_per_token(r)
        cyc_text = f"{cyc:,.0f}" if cyc else "?"
        flag = " !" if r.get("unstable") else ""
        lines.append(f"{row_label(r, with_machine):<{width}}  {med:>13,.0f}  {r['tok_s']['spread']:>6.1%}  "
                     f"{r['ns_per_token']:>9,.1f}  {cyc_text:>10}  {med / FPGA_TOK_S:>8.2f}x{flag}")
    for r in bad:
        lines.append(f"{row_label(r, with_machine):<{width}}  {r.get('status', 'failed').upper():>13}  "
                     f"{r.get('reason', '')}")
    notes = []
    if modelled:
        notes.append(f"TALOS-V2 modelled: {modelled['how']}")
    if any(r.get("unstable") for r in ok):
        notes.append("! unstable: repeats spread more than 10% (a busy machine?); rerun for firmer figures")
    for scenario in dict.fromkeys(scenarios.for_row(r) for r in ok):
        if scenario.table_note():
            notes.append(scenario.table_note())
    clock = (results.get("machine", {}).get("clock") or {})
    if clock.get("ghz"):
        notes.append(f"cycles/tok from a {clock['ghz']:.2f} GHz clock estimate ({clock.get('method', '')})")
    spread_note = "spread: (max - min) / median over the repeats; tok/s is the median"
    return "\n".join(lines + [""] + notes + [spread_note])


def format_accuracy(results: dict) -> str:
    """Accuracy table: KL(model || backend's sampling distribution), differing-token share."""
    rows = [r for r in results["rows"] if r.get("accuracy")]
    if not rows:
        return "accuracy: no rows measured"
    width = max(len(row_label(r)) for r in rows + [{"backend": "implementation"}])
    steps = rows[0]["accuracy"]["steps"]
    lines = [f"accuracy vs the float64 model over {steps:,} steps (same uniform draw for both)",
             f"{'implementation':<{width}}  {'mean KL':>10}  {'max KL':>10}  {'tokens differ':>13}  draws from",
             "-" * (width + 60)]
    for r in rows:
        a = r["accuracy"]
        lines.append(f"{row_label(r):<{width}}  {a['mean_kl']:>10.2e}  {a['max_kl']:>10.2e}  "
                     f"{a['token_differs_share']:>12.2%}  {a['distribution']}")
    return "\n".join(lines)
