"""PyTorch reference for the bootstrapped-ce parity suite.

Usage: python reference.py BATCH.json RESULT.json

BATCH.json: {"device": "cpu" | "cuda", "cases": [{"spec": {...}, "data": {...}}, ...]} as written by
test/parity/grid.ts. For every case this computes, with plain PyTorch ops, the loss that the package's
documented semantics define (cpp/loss/bootstrapped_ce.h, docs: loss-semantics) and the gradient with respect to
the input; and, where they agree with those semantics, the two seed implementations users port from (STCN's
BootstrappedCE and the functional bootstrapped_cross_entropy). The whole grid runs in this one process.

Nothing here calls the package: the effective p, k, the pool and the reductions are recomputed independently.
"""

import json
import math
import sys
import typing

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------------------
# Schedules (lib/schedules.ts, recomputed with the same formulas).


def effective_p(p: float, it: int, warmup: dict) -> float:
    kind = warmup["kind"]
    if kind == "none":
        return p
    if kind in ("number", "step"):
        return 1.0 if it < warmup["warmup"] else p
    if kind in ("linear", "cosine"):
        start, end = warmup["start"], warmup["end"]
        if it < start:
            return 1.0
        if it >= end:
            return p
        t = (it - start) / (end - start)
        shape = 1 - t if kind == "linear" else 0.5 * (1 + math.cos(math.pi * t))
        return p + (1 - p) * shape
    if kind == "custom":
        # grid.ts customWarmup: 1 before start, then halving every halfLife iterations down to p.
        if it < warmup["start"]:
            return 1.0
        return max(p, 0.5 ** ((it - warmup["start"]) // warmup["halfLife"]))
    raise ValueError("unknown warm-up kind %r" % kind)


def keep_count(p: float, n: int) -> int:
    """k = clamp(floor(p * n + 1e-9), 1, n); 0 for an empty pool."""
    if n <= 0:
        return 0
    return min(max(int(math.floor(p * n + 1e-9)), 1), n)


# ---------------------------------------------------------------------------------------------------------------
# Per-element losses: what F.cross_entropy / F.binary_cross_entropy(_with_logits) give with reduction='none'.

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build(tensor: typing.Optional[dict], dtype, device) -> typing.Optional[torch.Tensor]:
    if tensor is None:
        return None
    # Values arrive as float64; float32 cases hold float32-representable values, so the cast is exact.
    values = torch.tensor(tensor["values"], dtype=torch.float64).reshape(tensor["shape"])
    return values.to(device=device, dtype=dtype)


class Pool(typing.NamedTuple):
    losses: torch.Tensor  # per element, shaped like the target (the input for binary)
    valid: torch.Tensor  # bool, same shape
    denominator: typing.Optional[torch.Tensor]  # w[y] per element for weighted index targets, else None (k)


def element_losses(spec: dict, x: torch.Tensor, data: dict, device) -> Pool:
    dtype = x.dtype
    weight = build(data.get("weight"), dtype, device)
    if spec["loss"] == "ce":
        if spec["target"] == "prob":
            target = build(data["target"], dtype, device)
            losses = F.cross_entropy(x, target, weight=weight, label_smoothing=spec["labelSmoothing"], reduction="none")
            return Pool(losses, torch.ones_like(losses, dtype=torch.bool), None)
        target = torch.tensor(data["target"]["values"], dtype=torch.int64).reshape(data["target"]["shape"]).to(device)
        ignore = spec["ignoreIndex"]
        losses = F.cross_entropy(
            x, target, weight=weight, ignore_index=ignore, label_smoothing=spec["labelSmoothing"], reduction="none"
        )
        valid = target != ignore
        denominator = None
        if weight is not None:
            denominator = torch.where(valid, weight[target.clamp(0, x.shape[1] - 1)], torch.zeros_like(losses))
        return Pool(losses, valid, denominator)
    target = build(data["target"], dtype, device)
    if spec["loss"] == "bce":
        losses = F.binary_cross_entropy(x, target, weight=weight, reduction="none")
    else:
        pos_weight = build(data.get("posWeight"), dtype, device)
        losses = F.binary_cross_entropy_with_logits(x, target, weight=weight, pos_weight=pos_weight, reduction="none")
    return Pool(losses, torch.ones_like(losses, dtype=torch.bool), None)


# ---------------------------------------------------------------------------------------------------------------
# Selection and reduction (our semantics).


class Selection(typing.NamedTuple):
    index: torch.Tensor  # flat indices of the selected elements
    k: int
    n_valid: int
    tie_gap: float  # gap between the k-th and (k+1)-th valid loss, relative to the largest (inf: unambiguous)


def select(losses: torch.Tensor, valid: torch.Tensor, p: float) -> Selection:
    """The k hardest valid elements of a flat pool, ranked on detached values (a full sort: the same set as
    topk(k) without ties, and it also gives the gap at the k-th place)."""
    candidates = valid.reshape(-1).nonzero().reshape(-1)
    n_valid = candidates.numel()
    k = keep_count(p, n_valid)
    if k == 0:
        return Selection(candidates, 0, 0, math.inf)
    values = losses.detach().reshape(-1)[candidates]
    ordered, order = values.sort(descending=True)
    gap = math.inf
    if k < n_valid:
        scale = max(ordered.abs().max().item(), 1e-300)
        gap = (ordered[k - 1] - ordered[k]).item() / scale
    return Selection(candidates[order[:k]], k, n_valid, gap)


def reduce_selected(selected: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "fn:mean":
        return selected.mean()
    if reduction == "fn:sum2":
        return selected.sum() * 2
    raise ValueError(reduction)


class Reference(typing.NamedTuple):
    loss: torch.Tensor
    p: float
    k: int
    n_valid: int
    tie_gap: float


def ours(spec: dict, x: torch.Tensor, pool: Pool, p: float) -> Reference:
    """The documented semantics: pool = valid elements, exactly-k top-k, weighted mean over the selected."""
    reduction = spec["reduction"]
    losses = pool.losses
    # Batch scope is one group holding everything; per-sample scope is one group per sample.
    groups = losses.shape[0] if spec["perSample"] else 1
    flat = losses.reshape(groups, -1)
    valid = pool.valid.reshape(groups, -1)
    denominator = None if pool.denominator is None else pool.denominator.reshape(groups, -1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    means, selected, k_total, n_total, gap = [], [], 0, 0, math.inf
    for g in range(groups):
        chosen = select(flat[g], valid[g], p)
        k_total, n_total, gap = k_total + chosen.k, n_total + chosen.n_valid, min(gap, chosen.tie_gap)
        if chosen.k == 0:
            continue
        mask[g, chosen.index] = True
        values = flat[g][chosen.index]
        selected.append(values)
        weight_sum = chosen.k if denominator is None else denominator[g][chosen.index].sum()
        means.append(values.sum() / weight_sum)
    if reduction == "none":
        loss = (flat * mask).reshape(losses.shape)
    elif k_total == 0:
        loss = x.sum() * 0  # no valid element: a connected zero, never NaN
    elif reduction == "mean":
        loss = torch.stack(means).sum() / len(means)  # average over groups that have valid elements
    elif reduction == "sum":
        loss = torch.cat(selected).sum()
    else:
        loss = reduce_selected(torch.cat(selected), reduction)
    return Reference(loss, p, k_total, n_total, gap)


# ---------------------------------------------------------------------------------------------------------------
# The existing PyTorch implementations (STCN's BootstrappedCE and the functional bootstrapped_cross_entropy),
# verbatim in behaviour, used only where they agree with ours.


class BootstrappedCE(torch.nn.Module):
    """STCN / XMem model/losses.py."""

    def __init__(self, start_warm=20000, end_warm=70000, top_p=0.15):
        super().__init__()
        self.start_warm = start_warm
        self.end_warm = end_warm
        self.top_p = top_p

    def forward(self, input, target, it):
        if it < self.start_warm:
            return F.cross_entropy(input, target), 1.0
        raw_loss = F.cross_entropy(input, target, reduction="none").view(-1)
        num_pixels = raw_loss.numel()
        if it > self.end_warm:
            this_p = self.top_p
        else:
            this_p = self.top_p + (1 - self.top_p) * ((self.end_warm - it) / (self.end_warm - self.start_warm))
        loss, _ = torch.topk(raw_loss, int(num_pixels * this_p), sorted=False)
        return loss.mean(), this_p


def bootstrapped_cross_entropy(inputs, targets, iteration, p, warmup=-1, weight=None, ignore_index=-100,
                               reduction=torch.mean):
    """The functional bootstrapped_cross_entropy, as widely shared (a warm-up int or callable, a reduction callable)."""
    if not 0 < p < 1:
        raise ValueError("p should be in [0, 1] range, got: {}".format(p))
    if isinstance(warmup, int):
        this_p = 1.0 if iteration < warmup else p
    elif callable(warmup):
        this_p = warmup(p, iteration)
    else:
        raise ValueError("warmup should be int or callable, got {}".format(type(warmup)))
    if this_p == 1.0:
        return F.cross_entropy(inputs, targets, weight, ignore_index=ignore_index, reduction=reduction)
    raw_loss = F.cross_entropy(inputs, targets, weight=weight, ignore_index=ignore_index, reduction="none").view(-1)
    num_pixels = raw_loss.numel()
    loss, _ = torch.topk(raw_loss, int(num_pixels * this_p), sorted=False)
    return reduction(loss)


def plain_index_ce(spec: dict, data: dict) -> bool:
    """The existing implementations' common ground: class indices, nothing ignored, no class weights, no smoothing,
    batch scope."""
    return (
        spec["loss"] == "ce"
        and spec["target"] == "index"
        and spec["ignoreIndex"] not in data["target"]["values"]
        and data.get("weight") is None
        and spec["labelSmoothing"] == 0
        and not spec["perSample"]
    )


def stcn(spec: dict, x, target, ours_k: int, n: int):
    """STCN's BootstrappedCE, where it agrees: linear schedule with start < end, reduction 'mean', same k."""
    warmup = spec["warmup"]
    if warmup["kind"] != "linear" or warmup["start"] >= warmup["end"] or spec["reduction"] != "mean":
        return None
    it = spec["iteration"]
    module = BootstrappedCE(warmup["start"], warmup["end"], spec["p"])
    if it >= warmup["start"]:
        # STCN computes its own p; k must be the same and at least 1 (int(n * p) truncates, ours floors + 1e-9).
        this_p = module.top_p if it > module.end_warm else module.top_p + (1 - module.top_p) * (
            (module.end_warm - it) / (module.end_warm - module.start_warm))
        if int(n * this_p) != ours_k or ours_k < 1:
            return None
    loss, _ = module(x, target, it)
    return loss


def functional(spec: dict, x, target, p_eff: float, ours_k: int, n: int):
    """The functional bootstrapped_cross_entropy, where it agrees: p < 1 and effective p < 1 (its p == 1
    shortcut passes a callable reduction to F.cross_entropy, which rejects it), a reduction other than 'none',
    same k."""
    if spec["p"] >= 1 or p_eff >= 1 or spec["reduction"] == "none":
        return None
    if int(n * p_eff) != ours_k or ours_k < 1:
        return None
    reduction = {"mean": torch.mean, "fn:mean": torch.mean, "sum": torch.sum,
                 "fn:sum2": lambda s: s.sum() * 2}[spec["reduction"]]
    warmup = spec["warmup"]
    if warmup["kind"] == "number":
        schedule = warmup["warmup"]  # its integer warm-up
    else:
        schedule = lambda p, it: effective_p(p, it, warmup)  # noqa: E731 - its callable warm-up
    return bootstrapped_cross_entropy(x, target, spec["iteration"], spec["p"], schedule, reduction=reduction)


# ---------------------------------------------------------------------------------------------------------------


def backward(loss: torch.Tensor, x: torch.Tensor, upstream) -> list:
    x.grad = None
    if upstream is None:
        loss.backward()
    else:
        loss.backward(upstream)
    grad = x.grad if x.grad is not None else torch.zeros_like(x)
    return grad.detach().cpu().reshape(-1).tolist()


def flat_list(tensor: torch.Tensor) -> list:
    return tensor.detach().cpu().reshape(-1).tolist()


def leaf(data: dict, dtype, device) -> torch.Tensor:
    return build(data["input"], dtype, device).requires_grad_(True)


def run_case(case: dict, device) -> dict:
    spec, data = case["spec"], case["data"]
    dtype = DTYPES[spec["dtype"]]
    upstream = build(data.get("upstream"), dtype, device)
    p = effective_p(spec["p"], spec["iteration"], spec["warmup"])

    x = leaf(data, dtype, device)
    reference = ours(spec, x, element_losses(spec, x, data, device), p)
    result = {
        "id": spec["id"],
        "loss": flat_list(reference.loss),
        "grad": backward(reference.loss, x, upstream),
        "p": p,
        "k": reference.k,
        "nValid": reference.n_valid,
        "tieGap": reference.tie_gap if math.isfinite(reference.tie_gap) else None,
        "existingImpls": {},
    }
    if plain_index_ce(spec, data):
        target = torch.tensor(data["target"]["values"], dtype=torch.int64).reshape(data["target"]["shape"]).to(device)
        n = target.numel()
        for name, implementation in (("stcn", stcn), ("functional", functional)):
            x = leaf(data, dtype, device)
            args = (spec, x, target, reference.k, n) if name == "stcn" else (spec, x, target, p, reference.k, n)
            loss = implementation(*args)
            if loss is not None:
                result["existingImpls"][name] = {"loss": flat_list(loss), "grad": backward(loss, x, None)}
    return result


def main(argv: list) -> int:
    if len(argv) != 3:
        print("usage: reference.py BATCH.json RESULT.json", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        batch = json.load(f)
    device = torch.device(batch.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("reference.py: --device cuda requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 3
    results = [run_case(case, device) for case in batch["cases"]]
    with open(argv[2], "w") as f:
        json.dump({"torch": torch.__version__, "device": str(device), "results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
