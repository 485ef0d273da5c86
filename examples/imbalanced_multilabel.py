"""Worked example: which loss, which class weights, which sampler, for skewed labels.

A synthetic multilabel data set with a power-law label distribution (four
head labels in the proportions 19000/65000/38000/105000 of 250000, plus a
long tail down to < 0.1 %) trains the same small MLP with each loss variant.
Every variant is scored on a held-out test split at a threshold of 0.5 and at
per-class thresholds tuned on a validation split.

    make example                                               # full run
    PYTHONPATH=. python examples/imbalanced_multilabel.py --quick  # seconds

It writes examples/results.md and, when matplotlib is importable,
examples/results.png. CPU only; the full run takes about a minute.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
import time
import warnings

import torch
from torch.utils.data import WeightedRandomSampler

import fused_losses
from fused_losses import (BCEWithLogitsLoss, FocalBCE, GHMC, label_counts,
                          multilabel_sample_weights, pos_weight_from_counts, prior_bias)

HEAD_COUNTS = (19000, 65000, 38000, 105000)   # of REFERENCE_N samples
REFERENCE_N = 250_000
HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass
class Config:
    num_train: int = 12_000
    num_val: int = 8_000
    num_test: int = 8_000
    tail_classes: int = 20        # prevalence 3 % · k^-1.2, k = 1..20 (3 % .. 0.08 %)
    num_features: int = 48
    signal: float = 4.0           # norm of each label's feature prototype (noise: N(0, I))
    hidden: int = 64
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-3
    seeds: tuple = (0, 1, 2)

    @classmethod
    def quick(cls) -> "Config":
        """A few seconds: enough to check that every variant runs end to end."""
        return cls(num_train=800, num_val=400, num_test=400, tail_classes=4, epochs=2,
                   seeds=(0,))


def prevalences(cfg: Config) -> torch.Tensor:
    head = torch.tensor(HEAD_COUNTS, dtype=torch.float64) / REFERENCE_N
    tail = 0.03 * torch.arange(1, cfg.tail_classes + 1, dtype=torch.float64) ** -1.2
    return torch.cat([head, tail])


def make_data(cfg: Config, seed: int):
    """(x, y) for train, val and test: labels ~ Bernoulli(prevalence), independent;
    features = Σ of the positive labels' prototypes + N(0, I) noise."""
    gen = torch.Generator().manual_seed(seed)
    prev = prevalences(cfg)
    protos = torch.randn(prev.numel(), cfg.num_features, generator=gen, dtype=torch.float64)
    protos *= cfg.signal / protos.norm(dim=1, keepdim=True)
    splits = []
    for n in (cfg.num_train, cfg.num_val, cfg.num_test):
        y = torch.rand(n, prev.numel(), generator=gen, dtype=torch.float64) < prev
        x = y.double() @ protos + torch.randn(n, cfg.num_features, generator=gen,
                                              dtype=torch.float64)
        splits.append((x.float(), y))
    return splits


def variants(counts: torch.Tensor, n: int) -> dict:
    """name -> dict(loss=criterion, prior=init bias with prior_bias, sampler=reweight)."""
    def pw(**kw):
        return pos_weight_from_counts(counts, n, **kw)
    out = {
        "BCE": dict(loss=BCEWithLogitsLoss()),
        "BCE + prior bias": dict(loss=BCEWithLogitsLoss(), prior=True),
        "BCE pw=neg_pos": dict(loss=BCEWithLogitsLoss(pos_weight=pw(method="neg_pos"))),
        "BCE pw=neg_pos sqrt": dict(loss=BCEWithLogitsLoss(
            pos_weight=pw(method="neg_pos", smoothing="sqrt"))),
        "BCE pw=inverse_frequency": dict(loss=BCEWithLogitsLoss(
            pos_weight=pw(method="inverse_frequency"))),
        "BCE pw=effective_number": dict(loss=BCEWithLogitsLoss(
            pos_weight=pw(method="effective_number", beta=0.999))),
        "FocalBCE": dict(loss=FocalBCE(gamma=2.0, alpha=0.25)),
        "FocalBCE + prior bias": dict(loss=FocalBCE(gamma=2.0, alpha=0.25), prior=True),
    }
    if hasattr(fused_losses, "asymmetric_loss"):
        out["ASL"] = dict(loss=fused_losses.AsymmetricLoss(
            gamma_pos=1.0, gamma_neg=4.0, clip=0.05, reduction="sum"))
    out["GHM-C"] = dict(loss=GHMC(bins=10, momentum=0.75))
    out["BCE + weighted sampler"] = dict(loss=BCEWithLogitsLoss(), sampler=True)
    return out


def train(cfg: Config, variant: dict, x: torch.Tensor, y: torch.Tensor, seed: int):
    torch.manual_seed(seed)
    num_classes = y.shape[1]
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], cfg.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(cfg.hidden, num_classes))
    counts, n = label_counts(y)
    if variant.get("prior"):
        with torch.no_grad():
            model[-1].bias.copy_(prior_bias(counts, n))
    gen = torch.Generator().manual_seed(seed)
    sampler = None
    if variant.get("sampler"):
        sampler = WeightedRandomSampler(multilabel_sample_weights(y, mode="max"),
                                        num_samples=n, replacement=True, generator=gen)
    criterion, target = variant["loss"], y.float()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for _ in range(cfg.epochs):
        order = (torch.tensor(list(sampler)) if sampler is not None
                 else torch.randperm(n, generator=gen))
        for batch in order.split(cfg.batch_size):
            loss = criterion(model(x[batch]), target[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def tune_thresholds(prob: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per class, the threshold that maximises F1 on (prob, y): exact, by sorting."""
    order = prob.argsort(dim=0, descending=True)
    p_sorted, hits = prob.gather(0, order), y.gather(0, order).double()
    tp = hits.cumsum(0)
    k = torch.arange(1, prob.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
    f1 = 2 * tp / (k + y.sum(0, dtype=torch.float64))       # 2TP / (predicted + actual)
    best = f1.argmax(dim=0)
    cols = torch.arange(prob.shape[1])
    below = torch.where(best + 1 < prob.shape[0], p_sorted[(best + 1).clamp(
        max=prob.shape[0] - 1), cols], torch.zeros(()))
    thr = (p_sorted[best, cols] + below) / 2                   # between kept and next
    return torch.where(y.any(0), thr, torch.full_like(thr, 0.5))


def scores(prob: torch.Tensor, y: torch.Tensor, thr) -> dict:
    pred = prob >= thr
    tp = (pred & y).sum(0).double()
    fp, fn = (pred & ~y).sum(0).double(), (~pred & y).sum(0).double()
    prec = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros(()))
    rec = tp / (tp + fn).clamp(min=1)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp(min=1)
    return dict(precision=prec, recall=rec, macro_f1=f1.mean().item(), micro_f1=micro.item(),
                pred_ratio=(pred.sum() / y.sum().clamp(min=1)).item())


def run(cfg: Config, log=print) -> dict:
    """Train and score every variant for every seed. Returns the raw results."""
    results, started = {}, time.perf_counter()
    for seed in cfg.seeds:
        (xtr, ytr), (xva, yva), (xte, yte) = make_data(cfg, seed)
        counts, n = label_counts(ytr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a tiny split may miss a class
            table = variants(counts, n)
        for name, variant in table.items():
            t0 = time.perf_counter()
            model = train(cfg, variant, xtr, ytr, seed)
            with torch.no_grad():
                pva, pte = torch.sigmoid(model(xva)), torch.sigmoid(model(xte))
            thr = tune_thresholds(pva, yva)
            row = results.setdefault(name, dict(at_05=[], tuned=[], train_counts=[]))
            row["at_05"].append(scores(pte, yte, 0.5))
            row["tuned"].append(scores(pte, yte, thr))
            row["train_counts"].append(counts)
            log(f"seed {seed} {name:28s} macro F1 {row['at_05'][-1]['macro_f1']:.3f} @0.5, "
                f"{row['tuned'][-1]['macro_f1']:.3f} tuned ({time.perf_counter() - t0:.1f} s)")
    return dict(config=cfg, results=results, seconds=time.perf_counter() - started,
                asl=hasattr(fused_losses, "asymmetric_loss"))


def _mean_std(values):
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if t.numel() > 1 else 0.0)


def _fmt(values) -> str:
    m, s = _mean_std(values)
    return f"{m:.3f} ± {s:.3f}" if len(values) > 1 else f"{m:.3f}"


def summary_rows(out: dict):
    """(name, {metric: (mean, std)}) per variant, best tuned macro F1 first."""
    rows = []
    for name, r in out["results"].items():
        tail = slice(len(HEAD_COUNTS), None)
        rows.append((name, {
            "macro_05": _mean_std([s["macro_f1"] for s in r["at_05"]]),
            "micro_05": _mean_std([s["micro_f1"] for s in r["at_05"]]),
            "macro_tuned": _mean_std([s["macro_f1"] for s in r["tuned"]]),
            "micro_tuned": _mean_std([s["micro_f1"] for s in r["tuned"]]),
            "tail_recall": _mean_std([s["recall"][tail].mean().item() for s in r["at_05"]]),
            "tail_precision": _mean_std([s["precision"][tail].mean().item()
                                         for s in r["at_05"]]),
            "pred_ratio": _mean_std([s["pred_ratio"] for s in r["at_05"]]),
        }))
    return sorted(rows, key=lambda row: -row[1]["macro_tuned"][0])


def write_markdown(out: dict, path: pathlib.Path) -> None:
    cfg, res = out["config"], out["results"]
    pm = lambda ms: f"{ms[0]:.3f} ± {ms[1]:.3f}" if len(cfg.seeds) > 1 else f"{ms[0]:.3f}"
    counts = torch.stack(next(iter(res.values()))["train_counts"]).mean(0)
    lines = [
        "# Imbalanced multilabel: results", "",
        f"Written by `examples/imbalanced_multilabel.py` in {out['seconds']:.0f} s (CPU). "
        f"{len(prevalences(cfg))} labels; {cfg.num_train} train / {cfg.num_val} validation / "
        f"{cfg.num_test} test samples; MLP {cfg.num_features}-{cfg.hidden}-C, Adam "
        f"lr {cfg.lr}, {cfg.epochs} epochs, batch {cfg.batch_size}; seeds {list(cfg.seeds)} "
        "(mean ± std over seeds; each seed redraws data and initialisation).", "",
        "Train positives per label (mean over seeds): " +
        ", ".join(f"{int(round(c))}" for c in counts.tolist()) + ".", "",
        "ASL: " + ("included." if out["asl"] else "not available in this build "
                   "(`fused_losses.asymmetric_loss` missing)."), "",
        "## Summary (test split)", "",
        "Tuned: per-class thresholds maximising F1 on the validation split. Tail: labels "
        f"5-{len(counts)}. pred/true: predicted positives over true positives at 0.5.", "",
        "| variant | macro F1 @0.5 | micro F1 @0.5 | macro F1 tuned | micro F1 tuned | "
        "tail recall @0.5 | tail precision @0.5 | pred/true @0.5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary_rows(out):
        lines.append(f"| {name} | " + " | ".join(pm(m[k]) for k in (
            "macro_05", "micro_05", "macro_tuned", "micro_tuned", "tail_recall",
            "tail_precision", "pred_ratio")) + " |")
    for key, title in (("at_05", "threshold 0.5"), ("tuned", "tuned thresholds")):
        lines += ["", f"## Per-class recall / precision, {title} (mean over seeds)", "",
                  "| label | train n | " + " | ".join(res) + " |",
                  "|---|---|" + "---|" * len(res)]
        for c in range(len(counts)):
            cells = []
            for r in res.values():
                rec = sum(s["recall"][c].item() for s in r[key]) / len(r[key])
                pre = sum(s["precision"][c].item() for s in r[key]) / len(r[key])
                cells.append(f"{rec:.2f} / {pre:.2f}")
            lines.append(f"| {c} | {int(round(counts[c].item()))} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_chart(out: dict, path: pathlib.Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not importable: skipping the PNG chart")
        return False
    rows = summary_rows(out)
    names = [name for name, _ in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    pos = torch.arange(len(rows), dtype=torch.float64)
    for shift, key, label in ((-0.2, "macro_05", "threshold 0.5"),
                              (0.2, "macro_tuned", "tuned thresholds")):
        ax.barh((pos + shift).tolist(), [m[key][0] for _, m in rows], height=0.4,
                xerr=[m[key][1] for _, m in rows], label=label)
    ax.set_yticks(pos.tolist(), names)
    ax.invert_yaxis()
    ax.set_xlabel("test macro F1 (mean ± std over seeds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configuration (seconds)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs")
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="output folder")
    args = parser.parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    if args.seeds is not None:
        cfg.seeds = tuple(range(args.seeds))
    if args.epochs is not None:
        cfg.epochs = args.epochs
    torch.set_num_threads(1)  # a small MLP: threads cost more than they give
    if not hasattr(fused_losses, "asymmetric_loss"):
        print("ASL: not available in this build (fused_losses.asymmetric_loss missing)")
    out = run(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(out, args.out / "results.md")
    drew = write_chart(out, args.out / "results.png")
    print(f"wrote {args.out / 'results.md'}" + (" and results.png" if drew else "") +
          f" in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
