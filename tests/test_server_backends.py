"""The server scenario on every backend that has it: nothing lost, nothing changed by batching.

Each request's name must equal the first name of stream i of generate_offline (seeded with
stream_seed(seed, i)), under a load that keeps the queue full (every arrival at ~t = 0) and
under a light one; the native loop (c-fp32, c-q412) over several thread counts. No speed is
asserted: only that every request completes once, with its own name and a latency >= 0.
"""
import numpy as np
import pytest

from microgpt_bench import server
from microgpt_bench.backends import Unavailable, backend_class
from microgpt_bench.weights import load_weights

N = 400
SEED = 42


@pytest.fixture(scope="module")
def params():
    return load_weights()


def make(name, params, temperature=0.5):
    try:
        return backend_class(name)(params, temperature)
    except (Unavailable, ImportError) as exc:
        pytest.skip(f"{name}: {exc}")


def offline_names(backend, n, seed=SEED):
    return [server.first_name(row) for row in backend.generate_offline(n, 16, seed)]


def check_served(res, want):
    assert len(res.names) == len(want) and res.names == want  # each request once, its own name
    assert np.all(res.latency_ns >= 0)
    assert res.busy_lane_steps == sum(len(name) for name in res.names)


SCHEDULES = {"queue full": lambda n: np.linspace(0.0, 1e-6, n), "light": lambda n: server.poisson_arrivals(2e4, n, 3)}


@pytest.mark.parametrize("name", ["c-fp32", "c-q412"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("load", list(SCHEDULES))
def test_native_server_is_batch_invariant(params, name, threads, load):
    backend = make(name, params)
    res = backend.serve(SCHEDULES[load](N), server.request_seeds(SEED, N), None, threads)
    check_served(res, offline_names(backend, N))


@pytest.mark.parametrize("name", ["c-fp32", "c-q412"])
def test_native_server_every_batch_policy_and_lane_count(params, name):
    """All lanes batched, all one by one, and the default crossover; two blocks of lanes."""
    backend = make(name, params)
    unit = backend.serve_lanes()
    want = offline_names(backend, N)
    seeds = server.request_seeds(SEED, N)
    for batch_min in (1, unit + 1, 0):
        backend._check(backend._off_fn("set_batch_min")(backend._off_handle, batch_min), "set_batch_min")
        for lanes in (unit, 2 * unit):
            check_served(backend.serve(np.zeros(N), seeds, lanes, 2), want)


def test_native_server_greedy(params):
    backend = make("c-fp32", params, 0.0)
    check_served(backend.serve(np.zeros(50), server.request_seeds(SEED, 50), None, 2), offline_names(backend, 50))


@pytest.mark.parametrize("name", ["numpy", "numba", "torch-eager", "torch-compile", "jax-jit", "mlx-cpu"])
@pytest.mark.parametrize("load", list(SCHEDULES))
def test_python_server_is_batch_invariant(params, name, load):
    backend = make(name, params)
    assert "server" in type(backend).scenarios
    n = 120
    res = backend.serve(SCHEDULES[load](n), server.request_seeds(SEED, n), 8, 1)
    check_served(res, offline_names(backend, n))


@pytest.mark.parametrize("args, match", [
    ((np.array([]), []), "non-empty"), ((np.array([0.0, np.nan]), [1, 2]), "finite"),
    ((np.array([1.0, 0.5]), [1, 2]), "in order"), ((np.array([0.0, 1.0]), [1, 0]), "seed"),
    ((np.array([0.0, 1.0]), [1]), "seed"), ((np.array([-1.0]), [1]), "finite"), ((np.array([7200.0]), [1]), "finite")])
def test_bad_schedules_are_refused(params, args, match):
    backend = make("c-fp32", params)
    for be in (backend, make("numpy", params)):
        with pytest.raises(ValueError, match=match):
            be.serve(*args)


@pytest.mark.parametrize("kwargs, match", [({"threads": 0}, "threads"), ({"threads": 65}, "threads"),
                                           ({"threads": 1.5}, "threads"), ({"n_lanes": 0}, "n_lanes"),
                                           ({"n_lanes": 3}, "multiple")])
def test_bad_threads_and_lanes_are_refused(params, kwargs, match):
    backend = make("c-fp32", params)
    if match == "multiple" and backend.serve_lanes() == 1:
        pytest.skip("no SoA lanes on this CPU")
    with pytest.raises(ValueError, match=match):
        backend.serve(np.zeros(4), server.request_seeds(1, 4), **kwargs)


def test_python_loop_serves_from_one_thread(params):
    with pytest.raises(ValueError, match="one thread"):
        make("numpy", params).serve(np.zeros(4), server.request_seeds(1, 4), 4, 2)
