"""The command line: microgpt-bench {run,sweep,names,train,info,weights,report,compare} (also python -m microgpt_bench)."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from . import backends as registry
from . import scenarios
from .model import N_PARAMS
from .table import format_accuracy

EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def finite_float(text: str, ok, rule: str) -> float:
    """A finite float for which ok(value) holds, else an argparse error saying `rule`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value == value and abs(value) != float("inf") and ok(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number {rule}, got {text}")
    return value


def temperature_arg(text: str) -> float:
    """A finite number >= 0; each backend then checks its own range (Backend.validate_temperature)."""
    return finite_float(text, lambda v: v >= 0, ">= 0")


def positive_float(text: str) -> float:
    return finite_float(text, lambda v: v > 0, "> 0")


def percent(text: str) -> float:
    return finite_float(text, lambda v: v >= 0, ">= 0")


def int_list(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; every value a whole number >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def cpu_list(text: str) -> list[int]:
    """'0,2-3' -> [0, 2, 3]: CPU numbers as taskset takes them."""
    cpus = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list like 0,2-3") from None
    if not cpus or min(cpus) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list like 0,2-3")
    return sorted(set(cpus))


def seed_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"seeds are 32-bit: 0..4294967295, got {value}")
    return value


def add_model_args(p: argparse.ArgumentParser, sampler_default: str | None = None) -> None:
    p.add_argument("--weights", help="weights file or ROM directory (default: the shipped weights)")
    p.add_argument("--order", choices=["c", "talos"], default="c", help="flat order of a flat .npy/.bin")
    p.add_argument("--temperature", type=temperature_arg, default=0.5,
                   help="sampling temperature (default 0.5). 0 decodes greedily (argmax) on the float "
                        "backends; elsewhere 0.001..1000. talos-emu takes the FPGA's Q8.8 input, "
                        "0..255.996, quantised as the core does (T = 0 is a legal input it samples at)")
    p.add_argument("--seed", type=seed_int, default=42)
    if sampler_default:
        p.add_argument("--sampler", choices=["python", "xorshift32", "talos", "argmax"], default=None,
                       help=f"default: {sampler_default} where the backend has it, else the backend's own; "
                            "argmax: greedy decoding (the lowest index of the maximum logit)")
    else:
        p.add_argument("--sampler", choices=["xorshift32", "argmax"], default="xorshift32",
                       help="the timed loop's sampler (default xorshift32; talos-emu uses its core's own); "
                            "argmax: greedy decoding, the core's sample_mode = 0 for talos-emu")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="microgpt-bench", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="benchmark backends (correctness gate first, then timing)")
    add_model_args(run)
    run.add_argument("--backends", default=",".join(registry.DEFAULT_BACKENDS),
                     help="comma-separated backend names, or 'all'")
    run.add_argument("--seconds", type=positive_float, default=0.5,
                     help="length of one timed repeat (default 0.5: a default run of every row takes about 2 minutes)")
    run.add_argument("--repeats", type=positive_int, default=5)
    run.add_argument("--scenario", choices=[*scenarios.known(), scenarios.BOTH], default=scenarios.DEFAULT)
    run.add_argument("--streams", type=positive_int, default=256, help="offline: independent streams")
    run.add_argument("--threads", type=positive_int, default=None, help="offline: threads (default: all cores)")
    run.add_argument("--timeout", type=positive_float, default=300.0, help="per-row limit in seconds")
    run.add_argument("--cpu", type=cpu_list, default=None, metavar="LIST",
                     help="pin every worker process to these CPUs (e.g. 1 or 0,2-3)")
    run.add_argument("--no-latency", dest="latency", action="store_false",
                     help="skip the timestamped latency pass of single-stream rows")
    run.add_argument("--fpga-mhz", type=positive_float, default=None,
                     help="FPGA clock for the latency comparison (default: TALOS-V2's 56.25 MHz)")
    run.add_argument("--json", help="results file (default: results/<date>-<machine>.json)")
    run.add_argument("--label", help="machine label in reports (default: the CPU model and core count)")
    run.add_argument("--quiet", action="store_true")
    run.add_argument("--report", metavar="DIR",
                     help="where the report (charts, report.md, report.html) goes (default: beside the "
                          "results file, <results>-report/)")
    run.add_argument("--no-report", action="store_true", help="write only the results file")
    run.add_argument("--charts", metavar="DIR", help=argparse.SUPPRESS)  # older name of --report
    run.add_argument("--accuracy", action="store_true",
                     help="also measure each backend's next-token distribution against the float64 model")

    sweep = sub.add_parser("sweep", help="offline throughput against streams and threads")
    add_model_args(sweep)
    sweep.add_argument("--backend", default="c-fp32")
    sweep.add_argument("--streams", type=int_list, default=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    sweep.add_argument("--threads", type=int_list, default=None, help="e.g. 1,2 (default: 1 and all cores)")
    sweep.add_argument("--seconds", type=positive_float, default=0.5)
    sweep.add_argument("--repeats", type=positive_int, default=3)
    sweep.add_argument("--timeout", type=positive_float, default=300.0)
    sweep.add_argument("--json", help="results file (default: results/<date>-<machine>-sweep.json)")
    sweep.add_argument("--label")
    sweep.add_argument("--quiet", action="store_true")

    names = sub.add_parser("names", help="print sampled names")
    add_model_args(names, sampler_default="python")
    names.add_argument("--backend", default="numpy")
    names.add_argument("--count", type=positive_int, default=20)

    train = sub.add_parser("train", help="train microGPT (Karpathy's recipe, vectorised float64)")
    train.add_argument("--data", help="one word per line (default: the shipped names.txt, makemore's list)")
    train.add_argument("--steps", type=positive_int, default=1000)
    train.add_argument("--seed", type=seed_int, default=42)
    train.add_argument("--out", default="model.npz")
    train.add_argument("--quiet", action="store_true")

    info = sub.add_parser("info", help="machine, compilers, backends and why any is unavailable")
    info.add_argument("--json", action="store_true", help="print JSON")

    weights = sub.add_parser("weights", help="fetch or inspect weights")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    wsub.add_parser("fetch", help="download TALOS-V2's weights and names.txt, sha256-verified")
    show = wsub.add_parser("show", help="load a weights file, validate it and summarise it")
    show.add_argument("path", nargs="?")
    show.add_argument("--order", choices=["c", "talos"], default="c")
    rom = wsub.add_parser("export-rom", help="write Q4.12 ROM images (*_q12.hex, TALOS-V2's format) of the weights")
    rom.add_argument("out", help="directory for the nine *_q12.hex files")
    rom.add_argument("--weights", help="weights to export (default: the shipped weights)")
    rom.add_argument("--order", choices=["c", "talos"], default="c")
    conv = wsub.add_parser("convert", help="convert any supported format to the project's .npz")
    conv.add_argument("path")
    conv.add_argument("out")
    conv.add_argument("--order", choices=["c", "talos"], default="c")
    report = sub.add_parser("report", help="charts, report.md and a self-contained report.html from results files")
    report.add_argument("results", nargs="+", help="results JSON files (several machines or runs merge)")
    report.add_argument("--out", required=True, help="directory for the charts and pages")
    report.add_argument("--with-published", action="store_true",
                        help="add the original write-up's published rows and TALOS-V2, labelled 'published'")
    report.add_argument("--watts", action="append", metavar="BACKEND=W", default=[],
                        help="power for a backend's rows where none was measured (beats the assumed default)")
    compare = sub.add_parser("compare", help="what changed between results files, and whether it is noise")
    compare.add_argument("results", nargs="+", metavar="RESULTS.json",
                         help="BASE NEW [MORE ...]: each later file is compared with the first")
    compare.add_argument("--fail-slower", type=percent, metavar="PCT",
                         help="exit 1 if any row is significantly slower by more than PCT percent")
    compare.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    return ap


# ------------------------------------------------------------------ commands


def cmd_run(args) -> int:
    from .harness import RunConfig, run_benchmark
    from .machine import machine_info
    from .results import write_json
    from .latency_report import format_latency
    from .table import format_table

    names = registry.parse_backend_list(args.backends)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say("measuring the machine (clock estimate) ...")
    machine = machine_info(args.label)
    wanted = scenarios.expand(args.scenario)
    threads = args.threads or machine["cores"] or 1
    results = None
    for scenario in wanted:
        # with several scenarios, each backend runs in the ones it has; with one, a backend
        # lacking it gets an "unavailable" row saying so
        chosen = [n for n in names if scenarios.get(scenario).unavailable_reason(registry.backend_class(n)) is None
                  ] if len(wanted) > 1 else names
        extra = {"fpga_mhz": args.fpga_mhz} if args.fpga_mhz else {}
        cfg = RunConfig(backends=chosen, weights=args.weights, order=args.order, temperature=args.temperature,
                        sampler=args.sampler,
                        seed=args.seed, seconds=args.seconds, repeats=args.repeats, scenario=scenario,
                        streams=args.streams, threads=threads, timeout=args.timeout, label=args.label,
                        accuracy=args.accuracy, latency=args.latency, cpus=args.cpu, extra=extra)
        part = run_benchmark(cfg, machine, progress=say)
        if results is None:
            results = part
        else:
            results["rows"].extend(part["rows"])
    out = Path(args.json) if args.json else default_results_path(machine)
    print(format_table(results))
    latency = format_latency(results)
    if latency:
        print("\n" + latency)
    if args.accuracy:
        print("\n" + format_accuracy(results))
    write_json(results, out)
    print(f"\nresults: {out}")
    if not args.no_report:
        write_run_report(out, args.report or args.charts or out.with_name(out.stem + "-report"))
    return 0 if all(r.get("status") != "failed" for r in results["rows"]) else 1


def write_run_report(results_path: Path, out_dir) -> None:
    """The run's report beside its results (with the published rows for comparison); a report
    that cannot be written is a warning, never the loss of the results already saved."""
    from .report import have_matplotlib, write_report

    if not have_matplotlib():
        print("report: charts need matplotlib (pip install 'microgpt-bench[charts]'); writing the pages only",
              file=sys.stderr)
    try:
        written = write_report([results_path], out_dir, with_published=True)
    except (OSError, ValueError) as exc:
        print(f"microgpt-bench: warning: no report written ({exc})", file=sys.stderr)
        return
    print(f"report: {written['report.html']} (charts and report.md beside it)")


def default_results_path(machine: dict, suffix: str = "") -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{stamp}-{label_slug(machine.get('label') or 'machine')}{suffix}.json"


def label_slug(label: str, limit: int = 60) -> str:
    """'Intel Xeon Processor (family 6 model 167), 2 cores' -> 'intel-xeon-processor-family-6-...'."""
    words = "".join(c.lower() if c.isalnum() else " " for c in label).split()
    return "-".join(words)[:limit].strip("-") or "machine"


def cmd_sweep(args) -> int:
    from .harness import RunConfig, run_benchmark
    from .machine import machine_info
    from .results import new_results, write_json

    cls = registry.backend_class(args.backend)
    if scenarios.get(scenarios.SWEEP).unavailable_reason(cls):
        raise CliError(f"backend {args.backend} has no {scenarios.SWEEP} scenario to sweep")
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    machine = machine_info(args.label)
    threads = args.threads or sorted({1, machine["cores"] or 1})
    results = new_results(machine, {"sweep": args.backend, "streams": args.streams, "threads": threads,
                                    "seconds": args.seconds, "repeats": args.repeats, "seed": args.seed})
    points = []
    for t in threads:
        for n in args.streams:
            cfg = RunConfig(backends=[args.backend], weights=args.weights, order=args.order,
                            temperature=args.temperature, seed=args.seed, seconds=args.seconds,
                            repeats=args.repeats, scenario=scenarios.SWEEP, streams=n, threads=t, timeout=args.timeout)
            row = run_benchmark(cfg, machine)["rows"][0]
            tok_s = (row.get("tok_s") or {}).get("median")
            points.append({"streams": n, "threads": t, "status": row["status"], "tok_s": tok_s,
                           "spread": (row.get("tok_s") or {}).get("spread"),
                           "cycles_per_token_per_core": row.get("cycles_per_token_per_core"),
                           "reason": row.get("reason")})
            say(f"{args.backend} streams={n:<5} threads={t}: " + (f"{tok_s:,.0f} tok/s" if tok_s else
                                                                  f"{row['status']}: {row.get('reason')}"))
            if row["status"] == "ok" and (not results["rows"] or tok_s > results["rows"][0]["tok_s"]["median"]):
                results["rows"] = [row]  # the best point stands as the sweep's row
    results["sweeps"].append({"backend": args.backend, "points": points})
    out = Path(args.json) if args.json else default_results_path(machine, "-sweep")
    write_json(results, out)
    print(format_sweep(args.backend, points))
    print(f"\nresults: {out}")
    return 0 if any(p["status"] == "ok" for p in points) else 1


def format_sweep(backend: str, points: list[dict]) -> str:
    lines = [f"{backend} {scenarios.SWEEP} sweep", f"{'threads':>7} {'streams':>7} {'tok/s':>14} {'cycles/tok/core':>16}"]
    for p in points:
        if p["tok_s"]:
            cyc = p.get("cycles_per_token_per_core")
            lines.append(f"{p['threads']:>7} {p['streams']:>7} {p['tok_s']:>14,.0f} {cyc or 0:>16,.0f}")
        else:
            lines.append(f"{p['threads']:>7} {p['streams']:>7} {p['status'].upper():>14} {p.get('reason', '')}")
    return "\n".join(lines)


def cmd_report(args) -> int:
    from .power import parse_watts_list
    from .report import write_report

    watts = parse_watts_list(args.watts)  # a bad value: PowerError (a ValueError), exit 2
    for path in write_report(args.results, args.out, args.with_published, watts).values():
        print(path)
    return 0


def cmd_compare(args) -> int:
    from .compare import run_compare

    text, status = run_compare(args.results, args.fail_slower, args.format)
    sys.stdout.write(text)
    return status


def cmd_names(args) -> int:
    from .weights import load_weights

    cls = registry.backend_class(args.backend)
    reason = cls.availability()
    if reason:
        raise CliError(f"backend {args.backend} is unavailable here: {reason}")
    if args.sampler is None:
        args.sampler = "python" if "python" in cls.samplers else cls.samplers[0]
    if args.sampler not in cls.samplers:
        raise CliError(f"backend {args.backend} supports samplers {', '.join(cls.samplers)}, not {args.sampler}")
    cls.validate_temperature(args.temperature)  # a ValueError: one line, exit 2
    timed_sampler = "argmax" if args.sampler == "argmax" else "xorshift32"
    backend = cls.create(load_weights(args.weights, args.order), args.temperature, timed_sampler)
    for i, name in enumerate(backend.names(args.count, args.seed, args.sampler), 1):
        print(f"sample {i:2d}: {name}")
    return 0


def cmd_train(args) -> int:
    from .train import load_docs, train, training_manifest
    from .weights import save_npz, shipped_data_path

    args.data = args.data or str(shipped_data_path("names.txt"))
    docs = load_docs(args.data)

    def progress(step, loss):
        if not args.quiet and (step % 100 == 0 or step == args.steps - 1):
            print(f"step {step + 1:4d} / {args.steps} | loss {loss:.4f}", flush=True)

    result = train(docs, steps=args.steps, seed=args.seed, progress=progress)
    save_npz(result.params, args.out, training_manifest(args.data, args.steps, args.seed, result))
    print(f"trained {N_PARAMS} parameters on {len(docs)} documents in {result.seconds:.2f} s; "
          f"final loss {result.losses[-1]:.4f}; wrote {args.out}")
    return 0


def cmd_info(args) -> int:
    from .machine import machine_info

    machine = machine_info()
    rows = []
    for name in registry.known_backends():
        cls = registry.backend_class(name)
        reason = registry.availability(name)
        extra = cls.build_info() if not reason and hasattr(cls, "build_info") else {}
        rows.append({"backend": name, "available": reason is None, "reason": reason,
                     "scenarios": list(cls.scenarios), "description": cls.description, **extra})
    if args.json:
        print(json.dumps({"machine": machine, "backends": rows}, indent=1))
        return 0
    for key in ("label", "cpu", "arch", "cores", "simd", "os", "python", "numpy", "blas"):
        print(f"{key:>10}: {machine[key]}")
    clock = machine["clock"]
    print(f"{'clock':>10}: {clock['ghz']} GHz ({clock['method']})")
    for kind, comp in machine["compilers"].items():
        print(f"{kind:>10}: {comp['command'] + ' - ' + comp['version'] if comp else 'not found'}")
    for gpu in machine["gpus"]:
        print(f"{'gpu':>10}: {gpu['name']} (driver {gpu['driver']})")
    print("\nbackends:")
    for r in rows:
        state = "available" if r["available"] else f"unavailable: {r['reason']}"
        simd = f" [{r['simd']}]" if r.get("simd") else ""
        print(f"  {r['backend']:<16} {state}{simd}")
    return 0


def cmd_weights(args) -> int:
    from .fetch import SOURCES, fetch
    from .weights import load_weights_with_manifest, save_npz

    if args.weights_command == "fetch":
        for name in SOURCES:
            print(f"{name}: {fetch(name)} (sha256 verified)")
        return 0
    if args.weights_command == "export-rom":
        from .weights import save_rom_dir
        for path in save_rom_dir(load_weights_with_manifest(args.weights, args.order)[0], args.out):
            print(path)
        return 0
    if args.weights_command == "convert":
        params, _ = load_weights_with_manifest(args.path, args.order)
        save_npz(params, args.out, {"made_by": "microgpt-bench weights convert", "converted_from": args.path})
        print(f"wrote {args.out}")
        return 0
    params, manifest = load_weights_with_manifest(args.path, args.order)
    for name, t in params.tensors.items():
        print(f"{name:<16} {str(t.shape):<9} min {t.min():+.4f} max {t.max():+.4f} rms {(t ** 2).mean() ** .5:.4f}")
    if manifest:
        print(json.dumps(manifest, indent=1))
    return 0


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "names": cmd_names, "train": cmd_train, "info": cmd_info, "weights": cmd_weights,
            "report": cmd_report, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    from .fetch import FetchError
    from .results import ResultsError
    from .weights import WeightsError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, registry.UnknownBackend, WeightsError, ResultsError, FetchError, ValueError) as exc:
        print(f"microgpt-bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
