"""Power per row: RAPL on a fake sysfs tree, NVIDIA sampling with a fake nvidia-smi, defaults, --watts.

Meters take their clock and sleep as arguments: nothing here sleeps or reads the real clock.
"""
import os
import platform
import stat
import threading

import pytest

from microgpt_bench import power, power_meters
from microgpt_bench.power import (PowerError, default_power, meter_for, parse_watts, parse_watts_list,
                                  resolve_power)
from microgpt_bench.power_meters import (NvidiaMeter, PowerMeter, RaplMeter, rapl_unreadable_reason,
                                         rapl_zones)


class FakeClock:
    """Stands in for time.perf_counter/time.sleep; sleeping runs a hook (e.g. burns energy)."""

    def __init__(self):
        self.now, self.on_sleep = 100.0, None

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(seconds)


@pytest.fixture
def clock():
    return FakeClock()


def rapl(root, clock, idle_seconds=0.0, machine=None, backend="numpy"):
    fallback = (lambda why: default_power(backend, 1, machine)) if machine else None
    return RaplMeter(root, idle_seconds, fallback=fallback, clock=clock.perf_counter, sleep=clock.sleep)


def make_zone(root, name, energy_uj, max_uj=262143328850):
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def set_energy(zone, uj):
    (zone / "energy_uj").write_text(f"{uj}\n")


def test_rapl_zones_are_packages_not_subzones(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", 1)
    make_zone(tmp_path, "intel-rapl:0:0", 1)  # core subzone: inside the package's count already
    make_zone(tmp_path, "intel-rapl:1", 1)
    (tmp_path / "intel-rapl-mmio:0").mkdir()
    assert [z.name for z in rapl_zones(tmp_path)] == ["intel-rapl:0", "intel-rapl:1"]
    assert rapl_unreadable_reason(tmp_path) is None


def test_rapl_watts_over_the_window(tmp_path, clock):
    zone = make_zone(tmp_path, "intel-rapl:0", 5_000_000)
    meter = rapl(tmp_path, clock)
    meter.start()
    clock.now += 2.0
    set_energy(zone, 5_000_000 + 30_000_000)  # 30 J in 2 s
    got = meter.stop()
    assert got["measured"] is True and got["basis"] == "measured"
    assert got["watts"] == pytest.approx(15.0)
    assert got["idle_baseline_w"] is None
    assert "whole CPU package" in got["scope"]


def test_rapl_wraparound(tmp_path, clock):
    max_uj = 1_000_000_000
    zone = make_zone(tmp_path, "intel-rapl:0", max_uj - 4_000_000, max_uj)
    meter = rapl(tmp_path, clock)
    meter.start()
    clock.now += 1.0
    set_energy(zone, 5_999_999)  # wrapped: 4 J up to the top, then 6 J (the counter runs 0..max)
    assert meter.stop()["watts"] == pytest.approx(10.0)


def test_rapl_sums_packages_and_subtracts_the_idle_baseline(tmp_path, clock):
    zones = [make_zone(tmp_path, f"intel-rapl:{i}", 0) for i in range(2)]
    energy = [0, 0]

    def idle_burn(seconds):  # 3 W per package while the baseline is sampled
        for i, z in enumerate(zones):
            energy[i] += int(3e6 * seconds)
            set_energy(z, energy[i])

    clock.on_sleep = idle_burn
    meter = rapl(tmp_path, clock, idle_seconds=0.5)
    meter.start()
    clock.on_sleep = None
    clock.now += 4.0
    for i, z in enumerate(zones):  # 10 W per package during the window
        energy[i] += 40_000_000
        set_energy(z, energy[i])
    got = meter.stop()
    assert got["package_w"] == pytest.approx(20.0)
    assert got["idle_baseline_w"] == pytest.approx(6.0)
    assert got["watts"] == pytest.approx(14.0)
    assert "idle baseline" in got["method"]


def test_rapl_meter_that_breaks_gives_the_default(tmp_path, clock):
    zone = make_zone(tmp_path, "intel-rapl:0", 10)
    meter = rapl(tmp_path, clock, machine={"cpu": "AMD EPYC 9654", "arch": "x86_64", "os": "Linux 6.1"})
    meter.start()
    (zone / "energy_uj").unlink()
    got = meter.stop()
    assert got["measured"] is False and got["watts"] == 8.0
    assert "RaplMeter failed" in got["unmeasured"]


def test_unreadable_rapl_means_the_default(tmp_path, monkeypatch):
    monkeypatch.setattr(power.platform, "system", lambda: "Linux")
    assert "no RAPL package zones" in rapl_unreadable_reason(tmp_path)
    zone = make_zone(tmp_path, "intel-rapl:0", 1)
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()  # unreadable as a number, whoever we are
    assert "unreadable" in rapl_unreadable_reason(tmp_path)
    meter = meter_for("numpy", 2, machine={"cpu": "Intel(R) Xeon(R)", "arch": "x86_64", "os": "Linux"},
                      powercap_root=tmp_path)
    assert type(meter) is PowerMeter
    meter.start()
    got = meter.stop()
    assert got == {**default_power("numpy", 2, {"cpu": "Intel(R) Xeon(R)", "arch": "x86_64", "os": "Linux"}),
                   "unmeasured": got["unmeasured"]}
    assert got["measured"] is False and got["watts"] == 20.0 and "unreadable" in got["unmeasured"]


def test_rapl_permission_denied(tmp_path, monkeypatch):
    """Recent kernels let only root read energy_uj; the denial is simulated, since root (as CI
    runs) reads a file whatever its mode."""
    import microgpt_bench.power_meters as meters

    make_zone(tmp_path, "intel-rapl:0", 1)

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(meters, "_read_int", denied)
    assert "not readable by this user" in rapl_unreadable_reason(tmp_path)


def test_meter_for_picks_rapl_when_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(power.platform, "system", lambda: "Linux")
    make_zone(tmp_path, "intel-rapl:0", 1)
    assert isinstance(meter_for("numpy", powercap_root=tmp_path), RaplMeter)
    monkeypatch.setattr(power.platform, "system", lambda: "Darwin")
    meter = meter_for("numpy", powercap_root=tmp_path)
    meter.start()
    got = meter.stop()
    assert got["measured"] is False and "macOS: not measured" in got["unmeasured"]


def test_this_vm_row_gets_the_default_unless_rapl_is_readable():
    meter = meter_for("numpy")
    meter.start()
    got = meter.stop()
    assert got["basis"] in ("measured", "assumed")
    assert got["watts"] > 0
    if not got["measured"]:
        assert got["unmeasured"]


FAKE_SMI = """#!/bin/sh
# fake nvidia-smi: power.draw in watts; with -lms, three samples, then quiet until killed
for a in "$@"; do [ "$a" = "-lms" ] && loop=1; done
if [ -n "$loop" ]; then
  echo "40.00"; echo "42.50"; echo "45.00"
  exec sleep 300
fi
echo "17.25"
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    if platform.system() != "Linux":
        pytest.skip("the fake nvidia-smi is a POSIX shell script")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(power, "have_pynvml", lambda: False)
    import builtins
    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("no pynvml in this test")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    return smi


def test_nvidia_meter_is_chosen_by_the_declared_device(fake_smi, monkeypatch):
    monkeypatch.setattr(power.platform, "system", lambda: "Linux")
    assert isinstance(meter_for("cuda-persistent"), NvidiaMeter)
    assert isinstance(meter_for("torch-cuda"), NvidiaMeter)
    assert not isinstance(meter_for("mlx-gpu"), NvidiaMeter)  # Metal, whatever the name says
    monkeypatch.setattr(power, "backend_device", lambda name: "cuda")
    assert isinstance(meter_for("my-accelerator"), NvidiaMeter)  # no "cuda"/"gpu" in the name


def wait_until(condition, limit_s=60.0):
    """Yield until another thread makes condition() true: a liveness limit, not a timing to assert."""
    give_up = threading.Event()
    timer = threading.Timer(limit_s, give_up.set)
    timer.start()
    try:
        while not condition():
            assert not give_up.wait(0.005), "gave up waiting"
    finally:
        timer.cancel()


def test_nvidia_meter_samples_in_the_background(fake_smi, clock):
    meter = NvidiaMeter(0, clock=clock.perf_counter)
    meter.start()
    wait_until(lambda: len(meter.samples) >= 3)
    clock.now += 2.0
    got = meter.stop()
    assert got["measured"] is True and got["samples"] == 3
    assert got["watts"] == pytest.approx(42.5) and got["max_w"] == 45.0 and got["seconds"] == 2.0
    assert got["idle_baseline_w"] == pytest.approx(17.25)
    assert "whole GPU board" in got["scope"] and "nvidia-smi" in got["method"]
    assert meter.proc.poll() is not None  # the sampler was stopped


def test_gpu_row_without_a_meter_or_limit_has_no_figure(monkeypatch):
    monkeypatch.setattr(power.shutil, "which", lambda name: None)
    monkeypatch.setattr(power, "have_pynvml", lambda: False)
    monkeypatch.setattr(power.platform, "system", lambda: "Linux")
    meter = meter_for("cuda-naive", machine={"cpu": "x", "arch": "x86_64", "os": "Linux", "gpus": []})
    meter.start()
    got = meter.stop()
    assert got["watts"] is None and got["basis"] == "none" and "nvidia-smi" in got["unmeasured"]


@pytest.mark.parametrize("machine, backend, threads, watts, family", [
    ({"cpu": "Apple M4 Max", "arch": "arm64", "os": "Darwin 24.0"}, "c-fp32", 1, 5.0, "apple"),
    ({"cpu": "", "arch": "arm64", "os": "Darwin 23.1"}, "numpy", 4, 20.0, "apple"),
    ({"cpu": "NVIDIA Grace", "arch": "aarch64", "os": "Linux 6.8"}, "c-fp32", 10, 30.0, "grace"),
    ({"cpu": "Neoverse-N1", "arch": "aarch64", "os": "Linux 6.8"}, "c-fp32", 1, 3.0, "arm"),
    ({"cpu": "AMD EPYC", "arch": "x86_64", "os": "Linux 6.8"}, "c-fp32", 2, 16.0, "amd"),
    ({"cpu": "Intel(R) Core(TM) i9-13900K", "arch": "x86_64", "os": "Linux 6.8"}, "numpy", 1, 10.0, "intel"),
    ({"cpu": "RISC-V thing", "arch": "riscv64", "os": "Linux 6.8"}, "numpy", 1, 5.0, "other"),
])
def test_default_per_core_assumptions(machine, backend, threads, watts, family):
    got = default_power(backend, threads, machine)
    assert got["watts"] == pytest.approx(watts) and got["measured"] is False and got["basis"] == "assumed"
    assert got["cpu_family"] == family and got["method"].startswith("assumed")


def test_default_for_gpu_rows():
    machine = {"cpu": "AMD EPYC", "arch": "x86_64", "os": "Linux",
               "gpus": [{"name": "NVIDIA H100", "power_limit_w": "700.00"}]}
    got = default_power("cuda-persistent", 1, machine)
    assert got["watts"] == 700.0 and "power limit" in got["method"]
    assert default_power("torch-cuda", 1, {**machine, "gpus": []})["watts"] is None
    apple = default_power("mlx-gpu", 1, {"cpu": "Apple M1 Max", "arch": "arm64", "os": "Darwin"})
    assert apple["watts"] == 5.0


def test_parse_watts():
    assert parse_watts("c-fp32=5") == ("c-fp32", 5.0)
    assert parse_watts(" torch-cuda = 250.5 ") == ("torch-cuda", 250.5)
    assert parse_watts_list(["a=1", "b=2", "a=3"]) == {"a": 3.0, "b": 2.0}
    assert parse_watts_list(None) == {}


@pytest.mark.parametrize("text, message", [
    ("foo", "expected BACKEND=WATTS"),
    ("x=-1", "finite number > 0"),
    ("x=0", "finite number > 0"),
    ("x=inf", "finite number > 0"),
    ("x=nan", "finite number > 0"),
    ("x=abc", "not a number of watts"),
    ("=5", "no backend name"),
])
def test_bad_watts_are_clear_errors(text, message):
    with pytest.raises(PowerError, match=message):
        parse_watts(text)


def test_resolve_order_measured_then_given_then_default():
    machine = {"cpu": "AMD EPYC", "arch": "x86_64", "os": "Linux"}
    measured = {"backend": "c-fp32", "power": {"watts": 12.0, "measured": True, "method": "RAPL", "scope": "pkg"}}
    assumed = {"backend": "c-fp32", "threads": 1,
               "power": {"watts": 8.0, "measured": False, "basis": "assumed", "method": "assumed: ~8 W",
                         "unmeasured": "no RAPL"}}
    bare = {"backend": "numpy", "threads": 2}
    given = {"c-fp32": 4.0, "numpy": 6.0}
    assert resolve_power(measured, machine, given)["watts"] == 12.0  # a measurement is never overridden
    assert resolve_power(measured, machine, given)["basis"] == "measured"
    got = resolve_power(assumed, machine, given)
    assert got["watts"] == 4.0 and got["basis"] == "given" and got["unmeasured"] == "no RAPL"
    assert resolve_power(assumed, machine, {})["watts"] == 8.0
    assert resolve_power(bare, machine, {}) == default_power("numpy", 2, machine)  # old files: no "power"
    assert resolve_power(bare, machine, given)["watts"] == 6.0


def test_worker_rows_carry_power(shared_data):
    from microgpt_bench.harness import RunConfig, run_benchmark

    cfg = RunConfig(backends=["numpy"], weights=str(shared_data / "talos" / "weights_only.npy"),
                    seconds=0.05, repeats=1)
    row = run_benchmark(cfg, {"label": "t", "clock": {"ghz": None}})["rows"][0]
    assert row["status"] == "ok", row
    p = row["power"]
    assert set(p) >= {"watts", "measured", "basis", "method", "scope"}
    assert p["measured"] or (p["basis"] == "assumed" and p["unmeasured"])
