"""PyTorch rows: torch-eager (CPU, one thread), torch-compile (the same step under
torch.compile) and torch-cuda (the same eager step on a CUDA device).

One step = the full forward pass of every stream in the batch, then the sampler
and the reset rule, all as tensor ops: the xorshift32 state lives in an int64
tensor (masked to 32 bits), the 16-slot K/V caches are written with a one-hot
position mask and read under a `slot <= pos` mask, so shapes never change and
nothing leaves the device until the run ends. Single-stream is a batch of one.
torch is imported lazily; without it availability() gives the reason.
"""
from __future__ import annotations

import numpy as np

from ..model import BLOCK_SIZE, BOS, HEAD_DIM, N_EMBD, N_HEAD, RMS_EPS, VOCAB
from ._fw_common import FrameworkBackend, import_framework
from .base import Unavailable


def build_step(torch, w: dict, temperature: float, device):
    """The step function over (tok, pos, K, V, rng); closes over the weights (device tensors)."""
    wte, wpe = w["wte"], w["wpe"]
    wq_t, wk_t, wv_t, wo_t = (w[f"layer0.attn_{n}"].t().contiguous() for n in ("wq", "wk", "wv", "wo"))
    fc1_t, fc2_t = w["layer0.mlp_fc1"].t().contiguous(), w["layer0.mlp_fc2"].t().contiguous()
    lm_t = w["lm_head"].t().contiguous()
    slots = torch.arange(BLOCK_SIZE, device=device)
    greedy = temperature == 0  # greedy decoding: the lowest index of the max logit
    inv_t = 1.0 / temperature if temperature else 1.0
    scale = 1.0 / HEAD_DIM ** 0.5

    def rms(x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + RMS_EPS)

    def step(tok, pos, K, V, rng):
        b = tok.shape[0]
        x = rms(wte[tok] + wpe[pos])
        res = x
        x = rms(x)
        q, k, v = x @ wq_t, x @ wk_t, x @ wv_t
        here = (slots == pos[:, None]).unsqueeze(-1)                       # (B,16,1)
        K = torch.where(here, k.unsqueeze(1), K)
        V = torch.where(here, v.unsqueeze(1), V)
        att = (q.view(b, 1, N_HEAD, HEAD_DIM) * K.view(b, BLOCK_SIZE, N_HEAD, HEAD_DIM)).sum(-1) * scale
        valid = (slots <= pos[:, None]).unsqueeze(-1)                      # (B,16,1)
        att = torch.softmax(att.masked_fill(~valid, float("-inf")), dim=1)  # (B,16,H)
        out = (att.unsqueeze(-1) * V.view(b, BLOCK_SIZE, N_HEAD, HEAD_DIM)).sum(1).reshape(b, N_EMBD)
        x = out @ wo_t + res
        x = torch.relu(rms(x) @ fc1_t) @ fc2_t + x
        logits = x @ lm_t
        # sampler: xorshift32 on the low 32 bits of an int64, then the running-sum scan
        cum = torch.softmax(logits * inv_t, dim=-1).cumsum(-1)
        rng = rng ^ ((rng << 13) & 0xFFFFFFFF)
        rng = rng ^ (rng >> 17)
        rng = rng ^ ((rng << 5) & 0xFFFFFFFF)
        r = (rng >> 8).to(torch.float32) * (1.0 / 16777216.0)
        new = (cum[:, :VOCAB - 1] <= r.unsqueeze(1)).sum(-1)              # first id with r < c
        if greedy:
            new = logits.argmax(-1)
        npos = pos + 1
        reset = (new == BOS) | (npos == BLOCK_SIZE)
        nxt = torch.where(reset, torch.full_like(new, BOS), new)
        npos = torch.where(reset, torch.zeros_like(npos), npos)
        return new, nxt, npos, K, V, rng, logits

    return step


class TorchEagerBackend(FrameworkBackend):
    name = "torch-eager"
    description = "PyTorch eager, CPU, one thread, no_grad: the batched step op by op"
    framework = "torch"
    framework_module = "torch"
    device_name = "cpu"
    compiled = False

    def _setup(self) -> None:
        torch = self.torch = import_framework("torch")
        torch.set_num_threads(1)
        self.device = torch.device(self.device_name)
        w = {n: torch.tensor(a, device=self.device) for n, a in self._weights32().items()}
        step = build_step(torch, w, self.temperature, self.device)
        self.step = self._wrap(step)
        self._ensure_warm(1)

    def _wrap(self, step):
        return step

    def _version(self) -> str:
        return self.torch.__version__

    def _device(self) -> str:
        if self.device.type == "cuda":
            return f"cuda: {self.torch.cuda.get_device_name(self.device)}"
        return "cpu"

    def _set_threads(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self.torch.set_num_threads(self.threads)

    def _state(self, seeds: np.ndarray):
        torch, dev, b = self.torch, self.device, len(seeds)
        return (torch.full((b,), BOS, dtype=torch.int64, device=dev),
                torch.zeros(b, dtype=torch.int64, device=dev),
                torch.zeros((b, BLOCK_SIZE, N_EMBD), dtype=torch.float32, device=dev),
                torch.zeros((b, BLOCK_SIZE, N_EMBD), dtype=torch.float32, device=dev),
                torch.tensor(seeds.astype(np.int64), device=dev))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def _warm(self, batch: int) -> None:
        with self.torch.no_grad():
            self.step(*self._state(np.full(batch, 42, dtype=np.uint32)))
        self._sync()

    def _run(self, seeds: np.ndarray, n_tokens: int) -> np.ndarray:
        self._ensure_warm(len(seeds))
        torch, step = self.torch, self.step
        with torch.no_grad():
            tok, pos, K, V, rng = self._state(seeds)
            outs = []
            for _ in range(n_tokens):
                new, tok, pos, K, V, rng, _ = step(tok, pos, K, V, rng)
                outs.append(new)
            return torch.stack(outs, dim=1).cpu().numpy()

    def _lane_step(self, tok, pos, K, V, rng):
        torch, dev = self.torch, self.device
        with torch.no_grad():
            ins = (torch.from_numpy(np.ascontiguousarray(a, np.int64)).to(dev) for a in (tok, pos, rng))
            t, p, r = ins
            new, nxt, npos, K, V, r, _ = self.step(t, p, K, V, r)
        return new.cpu().numpy(), nxt.cpu().numpy(), npos.cpu().numpy(), K, V, r.cpu().numpy()

    def _new_cache(self):
        torch, dev = self.torch, self.device
        return (torch.zeros((1, BLOCK_SIZE, N_EMBD), dtype=torch.float32, device=dev),
                torch.zeros((1, BLOCK_SIZE, N_EMBD), dtype=torch.float32, device=dev))

    def _forward1(self, tok: int, pos: int, cache):
        torch, dev = self.torch, self.device
        K, V = cache
        with torch.no_grad():
            t = torch.tensor([tok], dtype=torch.int64, device=dev)
            p = torch.tensor([pos], dtype=torch.int64, device=dev)
            r = torch.ones(1, dtype=torch.int64, device=dev)
            _, _, _, K, V, _, logits = self.step(t, p, K, V, r)
        return logits[0].cpu().numpy(), (K, V)


class TorchCompileBackend(TorchEagerBackend):
    name = "torch-compile"
    description = "PyTorch CPU, one thread: the torch-eager step under torch.compile (inductor, static shapes)"
    compiled = True
    pad_batches = True

    @classmethod
    def _device_reason(cls, torch) -> None:
        if not hasattr(torch, "compile"):
            raise Unavailable(f"torch {torch.__version__} has no torch.compile (needs torch >= 2.0)")
        import shutil
        if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            raise Unavailable("torch.compile's CPU backend (inductor) needs a C++ compiler; none on PATH")

    def _wrap(self, step):
        return self.torch.compile(step, dynamic=False, fullgraph=True)

    def _set_threads(self, threads: int) -> None:
        # inductor bakes the thread count into its C++ kernels when it compiles them
        self.threads = 1

    def info(self) -> dict:
        d = super().info()
        d["compile"] = "torch.compile(step, dynamic=False, fullgraph=True), backend inductor"
        return d


class TorchCudaBackend(TorchEagerBackend):
    name = "torch-cuda"
    description = "PyTorch eager on a CUDA device: the same batched step, one sync per run"
    device_name = "cuda"
    device = "cuda"

    @classmethod
    def _device_reason(cls, torch) -> None:
        if not torch.cuda.is_available():
            built = torch.version.cuda
            raise Unavailable("no CUDA device visible to torch "
                              + (f"(torch {torch.__version__} built for CUDA {built})" if built
                                 else f"(torch {torch.__version__} is a CPU-only build)"))

    def _set_threads(self, threads: int) -> None:
        self.threads = 1
