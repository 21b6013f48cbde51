"""The command line: microgpt-bench {run,sweep,names,train,info,weights,report,compare} (also python -m microgpt_bench)."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
from pathlib import Path

from . import backends as registry
from . import scenarios
from .inputs import quote
from .model import N_PARAMS
from .outputs import check_output_dir, check_writable_target, fallback_path
from .table import format_accuracy

EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


# Parse-time bounds, from what a run of that size costs:
#  - a timed repeat longer than an hour, or a thousand repeats, is never a benchmark
#    anyone waits for (and --seconds 1e308 would overflow the token count);
#  - an offline stream costs a few KB of state (KV cache, logits, sampler) in every
#    backend, so 65,536 streams stay under about 0.5 GB and a calibration window
#    of one token per stream stays well under a second in C;
#  - a name is at most 16 tokens, so 10,000 names are at most 160,000 tokens: seconds
#    with numpy, about a minute in pure Python, a few MB of tokens.
MIN_SECONDS, MAX_SECONDS = 0.02, 3600.0  # the engine rejects windows under 10 ms (worker.MIN_WINDOW_S)
MAX_REPEATS = 1000
MAX_TIMEOUT = 7 * 24 * 3600.0
MAX_STREAMS = 65_536
MAX_SWEEP_POINTS = 64
MAX_NAMES = 10_000
#  - a training step takes about 1.2 ms and keeps its loss: a million steps are 20 minutes
#    and 30 MB, where 2**31 steps would be a month and 70 GB
MAX_TRAIN_STEPS = 1_000_000
MESSAGE_LIMIT = 600  # an error is one line, and a short one


def finite_float(text: str, ok, rule: str) -> float:
    """A finite float for which ok(value) holds, else an argparse error saying `rule`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a number") from None
    if not (value == value and abs(value) != float("inf") and ok(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number {rule}, got {quote(text)}")
    return value


def temperature_arg(text: str) -> float:
    """A finite number >= 0; each backend then checks its own range (Backend.validate_temperature)."""
    return finite_float(text, lambda v: v >= 0, ">= 0")


def positive_float(text: str) -> float:
    return finite_float(text, lambda v: v > 0, "> 0")


def percent(text: str) -> float:
    return finite_float(text, lambda v: v >= 0, ">= 0")


def bounded_float(low: float, high: float):
    def parse(text: str) -> float:
        value = positive_float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {quote(text)}")
        return value
    return parse


seconds_float = bounded_float(MIN_SECONDS, MAX_SECONDS)
timeout_float = bounded_float(1.0, MAX_TIMEOUT)


def bounded_int(high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{quote(text)} is not a whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:,}, got {quote(value)}")
        return value
    return parse


positive_int = bounded_int(2**31 - 1)


def int_list(high: int):
    """'1,2,4' -> [1, 2, 4]; every value a whole number in 1..high, at most MAX_SWEEP_POINTS values."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{quote(text)} is not a comma-separated list of whole numbers") from None
        if not values or min(values) < 1 or max(values) > high:
            raise argparse.ArgumentTypeError(f"values must be >= 1 and <= {high:,}, got {quote(text)}")
        if len(values) > MAX_SWEEP_POINTS:
            raise argparse.ArgumentTypeError(f"at most {MAX_SWEEP_POINTS} values, got {len(values)}")
        return list(dict.fromkeys(values))
    return parse


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
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a whole number") from None
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
    run.add_argument("--seconds", type=seconds_float, default=0.5,
                     help="length of one timed repeat (default 0.5: a default run of every row takes about 2 minutes)")
    run.add_argument("--repeats", type=bounded_int(MAX_REPEATS), default=5)
    run.add_argument("--scenario", choices=[*scenarios.known(), scenarios.BOTH], default=scenarios.DEFAULT)
    run.add_argument("--streams", type=bounded_int(MAX_STREAMS), default=256, help="offline: independent streams")
    run.add_argument("--threads", type=positive_int, default=None, help="offline: threads (default: all cores)")
    run.add_argument("--timeout", type=timeout_float, default=300.0, help="per-row limit in seconds")
    run.add_argument("--rate-start", type=float, default=None, metavar="NAMES_PER_S",
                     help="server: the search's first offered rate (default 2000 names/s)")
    run.add_argument("--latency-bound", type=float, default=None, metavar="MS",
                     help="server: the p99 per-name latency bound in ms (default 1)")
    run.add_argument("--requests", type=int, default=None, help="server: requests per load point (default 3000)")
    run.add_argument("--lanes", type=int, default=None,
                     help="server: lanes per worker (default: the backend's SoA width, 16 for the Python loops)")
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
    sweep.add_argument("--streams", type=int_list(MAX_STREAMS), default=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    sweep.add_argument("--threads", type=int_list(2**31 - 1), default=None, help="e.g. 1,2 (default: 1 and all cores)")
    sweep.add_argument("--seconds", type=seconds_float, default=0.5)
    sweep.add_argument("--repeats", type=bounded_int(MAX_REPEATS), default=3)
    sweep.add_argument("--timeout", type=timeout_float, default=300.0)
    sweep.add_argument("--json", help="results file (default: results/<date>-<machine>-sweep.json)")
    sweep.add_argument("--label")
    sweep.add_argument("--quiet", action="store_true")

    names = sub.add_parser("names", help="print sampled names")
    add_model_args(names, sampler_default="python")
    names.add_argument("--backend", default="numpy")
    names.add_argument("--count", type=bounded_int(MAX_NAMES), default=20)

    train = sub.add_parser("train", help="train microGPT (Karpathy's recipe, vectorised float64)")
    train.add_argument("--data", help="one word per line (default: the shipped names.txt, makemore's list)")
    train.add_argument("--steps", type=bounded_int(MAX_TRAIN_STEPS), default=1000)
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


def check_backends(names: list[str]) -> None:
    """What would otherwise surface as quiet 'unavailable' rows or a traceback: a bad
    MICROGPT_BENCH_SIMD, a malformed plugin list, a plugin that cannot be imported."""
    from . import native

    try:
        native.forced_simd()
    except native.BuildError as exc:
        raise CliError(str(exc)) from None
    extra = registry.plugins()
    for name in names:
        if name in extra:
            registry.backend_class(name)


def check_timing(args) -> None:
    """A row times a warm-up and calibration, the repeats, the checksum and latency passes
    (harness.OVERHEAD_WINDOWS): refuse what cannot finish within --timeout, before anything runs."""
    from .harness import OVERHEAD_WINDOWS
    needed = args.seconds * (args.repeats + OVERHEAD_WINDOWS)
    if needed > args.timeout:
        raise CliError(f"--seconds {args.seconds:g} with --repeats {args.repeats} needs about {needed:g} s a row, "
                       f"more than --timeout {args.timeout:g} s: lower them or raise --timeout")


def save_results(results: dict, out: Path) -> int:
    """Write the results file; if that fails at the end anyway (a full disk), keep a copy in
    the temporary directory and say where. Returns the exit code's contribution."""
    from .results import write_json

    try:
        write_json(results, out)
        print(f"\nresults: {out}")
        return 0
    except OSError as exc:
        why = f"{out}: cannot write the results ({exc.strerror or exc})"
    try:
        copy = write_json(results, fallback_path("microgpt-bench-results"))
        print(f"microgpt-bench: error: {why}; a copy is in {copy}", file=sys.stderr)
    except OSError:
        print(f"microgpt-bench: error: {why}, nor in the temporary directory; the results follow",
              file=sys.stderr)
        print(json.dumps(results, default=str))
    return EXIT_USAGE


def cmd_run(args) -> int:
    from .harness import RunConfig, run_benchmark
    from .machine import machine_info
    from .latency_report import format_latency
    from .table import format_table

    names = registry.parse_backend_list(args.backends)
    check_backends(names)
    check_timing(args)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say("measuring the machine (clock estimate) ...")
    machine = machine_info(args.label)
    out = Path(args.json) if args.json else default_results_path(machine)
    check_writable_target(out)
    report_dir = args.report or args.charts
    if report_dir and not args.no_report:
        check_output_dir(report_dir)
    wanted = scenarios.expand(args.scenario)
    threads = args.threads or machine["cores"] or 1
    results = None
    for scenario in wanted:
        # with several scenarios, each backend runs in the ones it has; with one, a backend
        # lacking it gets an "unavailable" row saying so
        chosen = [n for n in names if scenarios.get(scenario).unavailable_reason(registry.backend_class(n)) is None
                  ] if len(wanted) > 1 else names
        extra = {"fpga_mhz": args.fpga_mhz} if args.fpga_mhz else {}
        extra["server"] = server_settings(args)
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
    print(format_table(results))  # first: whatever happens to the file, the figures are shown
    from .server_report import format_server
    served = format_server(results)
    if served:
        print("\n" + served)
    latency = format_latency(results)
    if latency:
        print("\n" + latency)
    if args.accuracy:
        print("\n" + format_accuracy(results))
    saved = save_results(results, out)
    if not args.no_report and not saved:
        write_run_report(out, report_dir or out.with_name(out.stem + "-report"))
    return saved or (0 if all(r.get("status") != "failed" for r in results["rows"]) else 1)


def server_settings(args) -> dict:
    """The server scenario's options (validated with the run: scenarios/server.py)."""
    bound = args.latency_bound
    return {"rate_start": args.rate_start, "latency_bound_s": bound / 1e3 if bound is not None else None,
            "requests": args.requests, "lanes": args.lanes}


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
    from .results import new_results

    check_backends([args.backend])
    cls = registry.backend_class(args.backend)
    if scenarios.get(scenarios.SWEEP).unavailable_reason(cls):
        raise CliError(f"backend {args.backend} has no {scenarios.SWEEP} scenario to sweep")
    check_timing(args)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    machine = machine_info(args.label)
    out = Path(args.json) if args.json else default_results_path(machine, "-sweep")
    check_writable_target(out)
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
    print(format_sweep(args.backend, points))
    saved = save_results(results, out)
    return saved or (0 if any(p["status"] == "ok" for p in points) else 1)


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


def probed_availability(name: str) -> str | None:
    """The backend's availability, found in a subprocess first: a library that aborts when
    loaded (CC='gcc -fsanitize=address') makes a one-line error, not a dead CLI."""
    from . import native

    try:
        return native.run_probe("microgpt_bench.backends:availability", timeout=600, name=name)
    except native.ProbeError as exc:
        return f"loading it failed: {exc}"


def cmd_names(args) -> int:
    from .weights import load_weights

    check_backends([args.backend])
    cls = registry.backend_class(args.backend)
    reason = probed_availability(args.backend)
    if reason:
        raise CliError(f"backend {args.backend} is unavailable here: {reason}")
    if args.sampler is None:
        args.sampler = "python" if "python" in cls.samplers else cls.samplers[0]
    if args.sampler not in cls.samplers:
        raise CliError(f"backend {args.backend} supports samplers {', '.join(cls.samplers)}, not {args.sampler}")
    if args.seed == 0 and args.sampler in ("xorshift32", "talos"):
        raise CliError(f"seed 0 is xorshift32's fixed point (the {args.sampler} sampler would draw 0 forever "
                       "and print 'aaaaaaaaaaaaaaaa' names): choose a seed in 1..4294967295")
    cls.validate_temperature(args.temperature)  # a ValueError: one line, exit 2
    timed_sampler = "argmax" if args.sampler == "argmax" else "xorshift32"
    backend = cls.create(load_weights(args.weights, args.order), args.temperature, timed_sampler)
    found = backend.names(args.count, args.seed, args.sampler)
    if len(found) < args.count:
        raise CliError(f"backend {args.backend} generated {len(found)} names; {args.count} expected")
    for i, name in enumerate(found, 1):
        print(f"sample {i:2d}: {name}")
    return 0


def cmd_train(args) -> int:
    from .train import load_docs, train, training_manifest
    from .weights import save_npz, shipped_data_path

    args.data = args.data or str(shipped_data_path("names.txt"))
    docs = load_docs(args.data)
    check_writable_target(args.out)  # before the training, not after it

    def progress(step, loss):
        if not args.quiet and (step % 100 == 0 or step == args.steps - 1):
            print(f"step {step + 1:4d} / {args.steps} | loss {loss:.4f}", flush=True)

    result = train(docs, steps=args.steps, seed=args.seed, progress=progress)
    save_npz(result.params, args.out, training_manifest(args.data, args.steps, args.seed, result))
    print(f"trained {N_PARAMS} parameters on {len(docs)} documents in {result.seconds:.2f} s; "
          f"final loss {result.losses[-1]:.4f}; wrote {args.out}")
    return 0


def backend_row(name: str) -> dict:
    """What `info` says of one backend (loading it: native libraries included)."""
    try:
        cls = registry.backend_class(name)
    except registry.PluginError as exc:  # listed, with why, like any unavailable backend
        return {"backend": name, "available": False, "reason": str(exc), "scenarios": [], "description": "plugin"}
    reason = registry.availability(name)
    extra = cls.build_info() if not reason and hasattr(cls, "build_info") else {}
    return {"backend": name, "available": reason is None, "reason": reason,
            "scenarios": list(cls.scenarios), "description": cls.description, **extra}


def print_backend_rows(names: list[str]) -> None:
    """One JSON line per backend, each flushed as soon as it is known (see probed_backend_rows)."""
    for name in names:
        print(json.dumps(backend_row(name)), flush=True)


def probed_backend_rows() -> list[dict]:
    """Every backend's row, found in a subprocess: a native library that aborts when loaded
    (a sanitizer build, a broken driver) costs its own row, never the command. After such
    a crash the rows already printed are kept and a fresh subprocess takes the rest."""
    from .procs import run_isolated

    pending, rows = registry.known_backends(), []
    code = "import json, sys; from microgpt_bench.cli import print_backend_rows; " \
           "print_backend_rows(json.loads(sys.argv[1]))"
    while pending:
        done = run_isolated([sys.executable, "-c", code, json.dumps(pending)], timeout=1800)
        got = [json.loads(ln) for ln in done.stdout_tail.splitlines() if ln.startswith('{"backend"')]
        got = [r for r in got if r["backend"] in pending][: len(pending)]
        rows.extend(got)
        pending = pending[len(got):]
        if done.returncode == 0 or not pending:
            break
        rows.append({"backend": pending[0], "available": False, "scenarios": [], "description": "",
                     "reason": f"loading it failed ({done.how()}): {done.last_lines(limit=300)}"})
        pending = pending[1:]
    return rows


def check_environment() -> None:
    """Settings read deep inside the backends are checked up front: a bad one is a usage error."""
    from . import native

    try:
        native.forced_simd()
    except native.BuildError as exc:
        raise CliError(str(exc)) from exc


def format_peaks(peaks: dict) -> str:
    """One line: the measured fp32 FMA lanes and int16 multiply-adds per cycle."""
    if "error" in peaks:
        return f"not measured ({peaks['error']})"
    fp = ", ".join(f"{w}-bit {v:g}" for w, v in peaks.get("fp32_lanes_per_cycle", {}).items())
    i16 = ", ".join(f"{k} {v:g}" for k, v in peaks.get("int16_macs_per_cycle", {}).items())
    floors = ", ".join(f"{kind} {pk['per_cycle']:g} ({pk['by']}, {pk['of']})" for kind in ("fp32", "int16")
                       if (pk := peaks.get(f"{kind}_peak")) and pk.get("of"))
    adds = peaks.get("adds_beside_fmas")
    mix = f"; FMA+add mix at {adds['width']}-bit: {adds['ratio']:g}x the FMA rate ({adds['meaning']})" if adds else ""
    return (f"fp32 FMA lanes/cycle: {fp or 'none'}; int16 multiply-adds/cycle: {i16 or 'none'}{mix}"
            + (f"; floors use {floors}" if floors else ""))


def cmd_info(args) -> int:
    from .machine import machine_info

    check_backends([])
    machine = machine_info()
    rows = probed_backend_rows()
    if args.json:
        print(json.dumps({"machine": machine, "backends": rows}, indent=1))
        return 0
    for key in ("label", "cpu", "arch", "cores", "simd", "os", "python", "numpy", "blas"):
        print(f"{key:>10}: {machine[key]}")
    clock = machine["clock"]
    print(f"{'clock':>10}: {clock['ghz']} GHz ({clock['method']})")
    print(f"{'peaks':>10}: {format_peaks(machine.get('peaks') or {})}")
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
        check_writable_target(args.out)
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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C (the running worker's group is killed and
    temporary directories removed on the way out), then exit 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def one_line(message) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + " ..."


def main(argv: list[str] | None = None) -> int:
    from .fetch import FetchError
    from .results import ResultsError
    from .weights import WeightsError

    args = build_parser().parse_args(argv)
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        check_environment()
        return COMMANDS[args.command](args)
    except (CliError, registry.UnknownBackend, WeightsError, ResultsError, FetchError, ValueError) as exc:
        print(f"microgpt-bench: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file the command needed to read or write, named by the OS
        print(f"microgpt-bench: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        return 128 + getattr(exc, "signum", signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
