"""ops/batching.py: chunked forwards, run by CPU worker threads, give the one-forward result."""
from __future__ import annotations

import threading

import pytest
import torch

from amcfd.methods.amsnet import AMSNet
from amcfd.ops.batching import resolve_workers, run_in_chunks


class Recorder(torch.nn.Module):
    """A conv that records, per call, the batch size, the thread, grad mode and torch threads."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.calls = []
        self.lock = threading.Lock()

    def forward(self, x):
        with self.lock:
            self.calls.append(dict(n=x.shape[0], thread=threading.get_ident(), grad=torch.is_grad_enabled(),
                                   inference=torch.is_inference_mode_enabled(),
                                   threads=torch.get_num_threads()))
        return self.conv(x)


@pytest.fixture
def four_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def test_workers_give_the_sequential_result_in_order(four_threads):
    net = Recorder()
    x = torch.rand(10, 3, 12, 12)
    with torch.no_grad():
        whole = net(x)
        net.calls.clear()
        parallel = run_in_chunks(net, x, chunk=3, workers=2)
    torch.testing.assert_close(parallel, whole, atol=1e-6, rtol=0)
    assert sorted(c["n"] for c in net.calls) == [1, 3, 3, 3]
    main = threading.get_ident()
    assert all(c["thread"] != main for c in net.calls)                    # ran in the worker threads
    assert all(c["threads"] == 2 for c in net.calls)                      # 4 torch threads / 2 workers
    assert all(not c["grad"] and not c["inference"] for c in net.calls)   # the caller's no_grad, re-entered
    assert torch.get_num_threads() == 4                                   # the caller's count restored


def test_inference_mode_is_carried_into_the_workers(four_threads):
    net = Recorder()
    with torch.inference_mode():
        run_in_chunks(net, torch.rand(4, 3, 8, 8), chunk=1, workers=4)
    assert len(net.calls) == 4 and all(c["inference"] for c in net.calls)


def test_one_worker_or_one_chunk_stays_in_the_calling_thread():
    net = Recorder()
    main = threading.get_ident()
    with torch.no_grad():
        run_in_chunks(net, torch.rand(4, 3, 8, 8), chunk=2, workers=1)
        run_in_chunks(net, torch.rand(4, 3, 8, 8), chunk=0, workers=8)
    assert [c["n"] for c in net.calls] == [2, 2, 4]
    assert all(c["thread"] == main for c in net.calls)


def test_automatic_workers_only_for_cpu_inference(four_threads):
    x = torch.rand(1, 3, 8, 8)
    assert resolve_workers(None, x) == 1                                  # grad enabled: training
    with torch.no_grad():
        assert resolve_workers(None, x) == 4
        assert resolve_workers(3, x) == 3


@pytest.mark.parametrize("r3", [False, True])
def test_amsnet_with_workers_equals_one_worker(four_threads, r3):
    net = Recorder()
    noisy = torch.rand(1, 3, 16, 16)
    results = []
    for workers in (1, 4):
        torch.manual_seed(5)
        results.append(AMSNet(net, r3=r3, r3_copies=3, chunk_size=1, workers=workers).eval().denoise(noisy))
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=0)
    assert len({c["thread"] for c in net.calls}) > 1


def test_workers_option_is_checked():
    from amcfd.registry import ConfigError

    with pytest.raises(ConfigError, match="method.workers"):
        AMSNet(Recorder(), workers=0)
