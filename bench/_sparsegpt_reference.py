"""A reference SparseGPT, independent of nmsolve: the published algorithm in torch, with its own driver.

``fasterprune`` follows ``SparseGPT.fasterprune`` of the authors' code (github.com/IST-DASLab/sparsegpt,
``sparsegpt.py``) for N:M masks: float32, damping 1% of the mean diagonal, lazy blocks of 128
columns, the ``prunen`` smallest of every ``prunem`` saliencies ``w^2 / [U]_jj^2`` pruned (that code
counts *pruned* weights; here ``n`` counts kept ones, as everywhere in nmsolve). ``prune_model``
is the authors' sequential driver: block by block, the Gram matrix of every Linear of a block is
accumulated from the model whose earlier blocks are already pruned; the sentences are run one at a
time, so no padding enters a Gram matrix.
"""

from __future__ import annotations

import time
from typing import Any

import torch


def fasterprune(weight: torch.Tensor, H: torch.Tensor, n: int, m: int, blocksize: int = 128, percdamp: float = 0.01):
    """Pruned weights (float32) and the summed OBS losses, as the authors' ``fasterprune``."""
    prunen, prunem = m - n, m
    W = weight.detach().clone().float()
    H = H.clone()
    rows, columns = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    losses = torch.zeros(rows)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        mask1 = torch.zeros_like(W1) == 1
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if i % prunem == 0:
                tmp = W1[:, i : (i + prunem)] ** 2 / (torch.diag(Hinv1)[i : (i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        losses += torch.sum(Losses1, 1) / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W, float(losses.sum())


def prune_model(
    model: Any, blocks: Any, batches: list[dict[str, torch.Tensor]], n: int, m: int, chosen: Any
) -> dict[str, tuple[float, float]]:
    """Prune in place every Linear (``chosen(name)``) of each block, sequentially; per layer
    (relative error ||X W^T - X W'^T||^2 / ||X W^T||^2 on that layer's inputs, seconds)."""
    report: dict[str, tuple[float, float]] = {}
    with torch.no_grad():
        for b, block in enumerate(blocks):
            layers = {
                f"{b}.{name}": mod
                for name, mod in block.named_modules()
                if isinstance(mod, torch.nn.Linear) and chosen(f"{b}.{name}")
            }
            grams = {
                name: torch.zeros(mod.in_features, mod.in_features, dtype=torch.float64) for name, mod in layers.items()
            }

            def hook(name: str):
                def accumulate(module: Any, inputs: tuple, output: Any) -> None:
                    x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
                    grams[name] += x.T @ x

                return accumulate

            handles = [mod.register_forward_hook(hook(name)) for name, mod in layers.items()]
            for batch in batches:
                model(**batch)
            for handle in handles:
                handle.remove()
            for name, mod in layers.items():
                start = time.perf_counter()
                pruned, _ = fasterprune(mod.weight, grams[name].float(), n, m)
                seconds = time.perf_counter() - start
                h = grams[name]
                delta = mod.weight.double() - pruned.double()
                error = float(torch.einsum("ij,ij->", delta @ h, delta))
                energy = float(torch.einsum("ij,ij->", mod.weight.double() @ h, mod.weight.double()))
                mod.weight.copy_(pruned.to(mod.weight.dtype))
                report[name] = (error / energy if energy > 0 else 0.0, seconds)
    return report
