"""Worked example: extreme multilabel classification with a fused linear head.

A synthetic data set with 100,000 labels whose frequencies follow a power law
(a few labels in thousands of rows, most in none or one), 5-20 positives per
row kept as padded index lists. One small MLP encoder is trained with two
heads, same seed, initial weights, optimiser and steps:

- ``LinearFocalBCE`` (focal BCE, gamma = 2) with ``init_prior_bias`` from the
  train label counts: the fused head, fed the padded positives;
- ``torch.nn.Linear`` + ``F.binary_cross_entropy_with_logits`` on each
  batch's dense [B, C] target: the unfused path (plain BCE).

``--fused-bce`` adds ``LinearFocalBCE(gamma=0)``, the fused head computing the
unfused path's plain BCE: its scores should match the unfused run's.

Scores on the test split: P@1, P@5 and propensity-scored PSP@5 (Jain et al.,
KDD 2016), plus the peak extra memory of one head step (forward + backward)
of the fused and the unfused path at the training batch size.

    make example-xml                                               # full run
    PYTHONPATH=. python examples/extreme_multilabel.py --quick     # seconds

It writes examples/extreme_multilabel.md. CPU only.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import platform
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import LinearFocalBCE

HERE = pathlib.Path(__file__).resolve().parent
MiB = 1 << 20


@dataclasses.dataclass
class Config:
    num_labels: int = 100_000
    num_train: int = 16_000
    num_test: int = 2_000
    min_pos: int = 5              # positives per row: uniform in [min_pos, max_pos]
    max_pos: int = 20             # (duplicate draws removed, so a few rows have fewer)
    zipf: float = 1.0             # label l (by rank) is drawn with probability ∝ l^-zipf
    latent: int = 48              # each label's prototype lives here
    num_features: int = 128       # a row's features: tanh(latent mix @ projection) + noise
    noise: float = 0.1
    hidden: int = 256
    embed: int = 64               # H, the head's input width
    epochs: int = 2
    batch_size: int = 512
    lr: float = 2e-3
    eval_rows: int = 256          # test rows scored at once: [eval_rows, C] logits
    seed: int = 0

    @classmethod
    def quick(cls) -> "Config":
        return cls(num_labels=5_000, num_train=2_000, num_test=500, epochs=1)


def make_data(cfg: Config):
    """Train and test splits ``(features [N, F], positives [N, max_pos] int64, -1
    padding)`` and the labels' draw probabilities."""
    gen = torch.Generator().manual_seed(cfg.seed)
    c = cfg.num_labels
    rank = torch.arange(1, c + 1, dtype=torch.float64)
    prob = rank.pow(-cfg.zipf)[torch.randperm(c, generator=gen)]   # ids not sorted by rank
    prob /= prob.sum()
    protos = torch.randn(c, cfg.latent, generator=gen)
    protos /= protos.norm(dim=1, keepdim=True)
    projection = torch.randn(cfg.latent, cfg.num_features, generator=gen) / math.sqrt(cfg.latent)
    splits = []
    for n in (cfg.num_train, cfg.num_test):
        draws = torch.multinomial(prob, n * cfg.max_pos, replacement=True,
                                  generator=gen).view(n, cfg.max_pos)
        k = torch.randint(cfg.min_pos, cfg.max_pos + 1, (n, 1), generator=gen)
        draws = torch.where(torch.arange(cfg.max_pos) < k, draws, c)   # c: "no label"
        draws = draws.sort(dim=1).values
        repeat = torch.zeros_like(draws, dtype=torch.bool)
        repeat[:, 1:] = draws[:, 1:] == draws[:, :-1]
        pos = torch.where(repeat | (draws == c), -1, draws)
        valid = (pos >= 0).unsqueeze(-1)
        mix = (protos[pos.clamp(min=0)] * valid).sum(1) / valid.sum(1).clamp(min=1).sqrt()
        mix += cfg.noise * torch.randn(mix.shape, generator=gen)
        x = torch.tanh(mix @ projection)
        x += cfg.noise * torch.randn(x.shape, generator=gen)
        splits.append((x, pos))
    return splits


def label_counts_padded(pos: torch.Tensor, c: int) -> torch.Tensor:
    return torch.bincount(pos[pos >= 0], minlength=c).float()


def dense_target(pos: torch.Tensor, c: int) -> torch.Tensor:
    """The [B, C] float multi-hot target of a batch (what the unfused path needs)."""
    y = torch.zeros(pos.shape[0], c + 1)
    y.scatter_(1, torch.where(pos >= 0, pos, c), 1.0)
    return y[:, :c]


def encoder(cfg: Config) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(cfg.num_features, cfg.hidden), torch.nn.ReLU(),
                               torch.nn.Linear(cfg.hidden, cfg.embed))


class Unfused(torch.nn.Module):
    """``nn.Linear`` + BCE on the dense batch target: logits, their gradient and
    the target are [B, C] tensors."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.linear = torch.nn.Linear(cfg.embed, cfg.num_labels)
        self.num_labels = cfg.num_labels

    def logits(self, h):
        return self.linear(h)

    def forward(self, h, pos):
        return F.binary_cross_entropy_with_logits(self.linear(h),
                                                  dense_target(pos, self.num_labels))


def build(cfg: Config, kind: str, counts: torch.Tensor):
    """(encoder, head) with the same initial weights for every kind (same seed and
    nn.Linear's initialisation in all heads)."""
    torch.manual_seed(cfg.seed)
    enc = encoder(cfg)
    if kind == "unfused":
        return enc, Unfused(cfg)
    head = LinearFocalBCE(cfg.embed, cfg.num_labels, gamma=2.0 if kind == "focal" else 0.0)
    if kind == "focal":
        with warnings.catch_warnings():        # labels never seen in train: bias ≈ -log 2N
            warnings.simplefilter("ignore", RuntimeWarning)
            head.init_prior_bias(counts, cfg.num_train)
    return enc, head


def train(cfg: Config, enc, head, x, pos) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed)
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    steps, started = 0, time.perf_counter()
    for _ in range(cfg.epochs):
        for batch in torch.randperm(x.shape[0], generator=gen).split(cfg.batch_size):
            loss = head(enc(x[batch]), pos[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    seconds = time.perf_counter() - started
    return dict(seconds=seconds, steps=steps, step_s=seconds / steps, last_loss=loss.item())


def propensities(counts: torch.Tensor, n: int, a: float = 0.55, b: float = 1.5) -> torch.Tensor:
    """Jain et al. (KDD 2016): p_l = 1 / (1 + C·exp(-A·log(N_l + B))),
    C = (log N - 1)·(B + 1)^A."""
    c_jain = (math.log(n) - 1) * (b + 1) ** a
    return 1.0 / (1.0 + c_jain * torch.exp(-a * torch.log(counts.double() + b)))


@torch.no_grad()
def top_k(cfg: Config, enc, head, x, k: int = 5) -> torch.Tensor:
    """[N, k] best labels per row, scored eval_rows rows at a time."""
    enc.eval()
    out = [head.logits(enc(rows)).topk(k, dim=1).indices for rows in x.split(cfg.eval_rows)]
    enc.train()
    return torch.cat(out)


def metrics(top: torch.Tensor, pos: torch.Tensor, inv_p: torch.Tensor) -> dict:
    """P@1, P@5, PSP@1, PSP@5 (PSP: Σ over rows of the propensity-weighted hits in
    the top k, divided by the same sum for the best possible ranking)."""
    hits = (top.unsqueeze(2) == pos.unsqueeze(1)).any(2).double()          # [N, k]
    gain = hits * inv_p[top]
    best = torch.where(pos >= 0, inv_p[pos.clamp(min=0)], 0.0).sort(dim=1, descending=True)
    out = {}
    for k in (1, 5):
        out[f"P@{k}"] = hits[:, :k].sum(1).mean().item() / k
        out[f"PSP@{k}"] = (gain[:, :k].sum() / best.values[:, :k].sum()).item()
    return out


def peak_step_mib(head, h: torch.Tensor, pos: torch.Tensor) -> float:
    """Peak extra CPU memory of one head step (forward + backward), from a leaf of
    features [B, H]; the unfused step includes building its dense target."""
    from bench._memory import cpu_peak_extra_bytes
    feats = h.detach().requires_grad_()

    def step():
        head(feats, pos).backward()
    step()                                                      # warm-up (e.g. grad caches)
    head.zero_grad(set_to_none=True)
    feats.grad = None
    return cpu_peak_extra_bytes(step) / MiB


RUNS = {"focal": ("LinearFocalBCE γ=2 + prior bias (fused)", "padded [B, K]"),
        "bce": ("LinearFocalBCE γ=0, i.e. BCE (fused)", "padded [B, K]"),
        "unfused": ("nn.Linear + F.binary_cross_entropy_with_logits", "dense [B, C] float")}


def run(cfg: Config, kinds=("focal", "unfused"), log=print) -> dict:
    started = time.perf_counter()
    (xtr, ptr), (xte, pte) = make_data(cfg)
    counts = label_counts_padded(ptr, cfg.num_labels)
    inv_p = 1.0 / propensities(counts, cfg.num_train)
    log(f"data: {cfg.num_train} train / {cfg.num_test} test rows, {cfg.num_labels} labels, "
        f"{(counts > 0).sum().item()} seen in train, max count {int(counts.max())}, "
        f"{(ptr >= 0).sum(1).float().mean():.1f} positives per row "
        f"({time.perf_counter() - started:.1f} s)")
    popular = counts.topk(5).indices.expand(cfg.num_test, 5)
    results = {"popular": dict(metrics=metrics(popular, pte, inv_p))}
    memory = {}
    for kind in kinds:
        enc, head = build(cfg, kind, counts)
        row = train(cfg, enc, head, xtr, ptr)
        row["metrics"] = metrics(top_k(cfg, enc, head, xte), pte, inv_p)
        results[kind] = row
        log(f"{kind:8s} {row['steps']} steps in {row['seconds']:.1f} s  " +
            "  ".join(f"{m} {val:.4f}" for m, val in row["metrics"].items()))
        if kind != "bce":
            with torch.no_grad():
                h = enc(xtr[:cfg.batch_size])
            memory[kind] = peak_step_mib(head, h, ptr[:cfg.batch_size])
            log(f"{kind:8s} one head step at B={cfg.batch_size}: peak extra "
                f"{memory[kind]:.1f} MiB")
    return dict(config=cfg, results=results, memory=memory, counts=counts,
                seconds=time.perf_counter() - started, load=os.getloadavg()[1])


def write_markdown(out: dict, path: pathlib.Path) -> str:
    cfg, res, mem, counts = out["config"], out["results"], out["memory"], out["counts"]
    logits_mib = cfg.batch_size * cfg.num_labels * 4 / MiB
    cap = torch.ops.fused_losses._cpu_capability() if hasattr(
        torch.ops.fused_losses, "_cpu_capability") else torch.backends.cpu.get_cpu_capability()
    sorted_counts = counts.sort(descending=True).values
    lines = [
        "# Extreme multilabel: results", "",
        f"Written by `examples/extreme_multilabel.py` in {out['seconds']:.0f} s on the CPU "
        f"({platform.machine()}, {cap}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}). {cfg.num_labels:,} labels drawn with probability ∝ rank^-"
        f"{cfg.zipf:g}; {cfg.num_train:,} train / {cfg.num_test:,} test rows, "
        f"{cfg.min_pos}-{cfg.max_pos} draws per row; features: tanh of a {cfg.latent}-dim "
        f"mix of the labels' prototypes, projected to {cfg.num_features}, plus noise. "
        f"Encoder MLP {cfg.num_features}-{cfg.hidden}-{cfg.embed}, head [C, H] = "
        f"[{cfg.num_labels:,}, {cfg.embed}] fp32, Adam lr {cfg.lr}, {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, seed {cfg.seed}. Load average over the last 5 minutes "
        f"at the end: {out['load']:.1f} on {os.cpu_count()} cores" + (
            " (other jobs shared the CPU: every time below is inflated)."
            if out["load"] > (os.cpu_count() or 1) + 0.5 else "."), "",
        f"Train label counts: {int((counts > 0).sum()):,} labels seen, "
        f"{int((counts == 0).sum()):,} never; largest {', '.join(str(int(v)) for v in sorted_counts[:5])}; "
        f"median of the seen labels {int(counts[counts > 0].median())}.", "",
        "## Test split", "",
        "PSP@k: propensity-scored precision (Jain et al., KDD 2016; A = 0.55, B = 1.5), "
        "normalised by the best achievable value. *popular*: the 5 most frequent train "
        "labels for every row.", "",
        "| head | target fed | train s | s / step | P@1 | P@5 | PSP@1 | PSP@5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    m = res["popular"]["metrics"]
    lines.append("| popular (no model) | - | - | - | " +
                 " | ".join(f"{m[k]:.4f}" for k in ("P@1", "P@5", "PSP@1", "PSP@5")) + " |")
    for kind, r in res.items():
        if kind == "popular":
            continue
        name, target = RUNS[kind]
        lines.append(f"| {name} | {target} | {r['seconds']:.1f} | {r['step_s']:.3f} | " +
                     " | ".join(f"{r['metrics'][k]:.4f}" for k in
                                ("P@1", "P@5", "PSP@1", "PSP@5")) + " |")
    lines += [
        "", "The fused and unfused rows differ in loss (focal vs plain BCE) and bias "
        "initialisation (prior vs nn.Linear's); fusing changes neither the maths nor the "
        "scores (`--fused-bce` trains the fused head with plain BCE for comparison). Times "
        "are wall-clock seconds of the whole training step (encoder, head, Adam).",
    ]
    lines += [
        "", f"## Memory of one head step (forward + backward), B = {cfg.batch_size}", "",
        "Peak CPU bytes allocated beyond those alive before the step "
        "(`bench/_memory.py::cpu_peak_extra_bytes`), from features [B, H] that need a "
        "gradient; the parameter gradients ([C, H] + [C]) count in both. The unfused step "
        "includes building its dense float target. For scale: the [B, C] fp32 logits are "
        f"{logits_mib:.0f} MiB.", "",
        "| path | peak extra MiB |", "|---|---|",
        f"| fused (`LinearFocalBCE`, padded positives) | {mem['focal']:.1f} |",
        f"| unfused (`nn.Linear` + BCE, dense target) | {mem['unfused']:.1f} |",
    ]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configuration (seconds)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--fused-bce", action="store_true",
                        help="also train the fused head with plain BCE (gamma=0)")
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="output folder")
    args = parser.parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    if args.epochs is not None:
        cfg.epochs = args.epochs
    torch.manual_seed(cfg.seed)
    out = run(cfg, ("focal", "bce", "unfused") if args.fused_bce else ("focal", "unfused"))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "extreme_multilabel.md"
    print(write_markdown(out, path))
    print(f"wrote {path} in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
