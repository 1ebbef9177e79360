"""Function-preserving channel permutations of a torch model, chosen to help N:M (:func:`permute_channels`).

For ``y = W2 act(W1 x + b1)`` with an elementwise ``act``, a permutation ``P`` of the hidden units
gives the same function with ``W1 <- P W1``, ``b1 <- P b1`` and ``W2 <- W2 P^T``: the input columns of
the consumer ``W2`` can be reordered freely, as long as the producer's output rows (and everything
per-channel in between: BatchNorm running statistics and affine parameters, a LayerNorm's affine
parameters) follow. Inside attention the value dimensions of each head can be permuted the same way
(within the head), which reorders the input columns of the output projection.

:func:`permute_channels` finds such groups (producers, per-channel modules, consumers) in a model
(by the module names of the usual transformer layers, inside ``nn.Sequential`` chains, and in the
``torch.fx`` graph of models that trace),
searches each group's permutation with :func:`nmsolve.channel_permutation` on the summed scores of
its consumers, and writes the permuted weights in place. A later N:M pruning (magnitude,
:func:`nmsolve.torch.prune_oneshot`) then keeps more, and its masks are N:M in stored order.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from nmsolve._progress import progress_bar
from nmsolve._validate import check_bool, check_nm, choose
from nmsolve.torch._convert import to_numpy
from nmsolve.torch.adapter import LayerReport, _patterns, check_model, module_kind

# modules applied elementwise (the same function on every channel): a permutation passes through them
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Mish,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
)
# per-channel modules: their parameters/buffers along the channel axis are permuted with it
_PER_CHANNEL: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)

SCORES = ("magnitude", "wanda")


# --------------------------------------------------------------------------- groups and report


@dataclass(frozen=True)
class PermutationGroup:
    """Modules that one channel permutation must be applied to together (qualified module names).

    Attributes
    ----------
    producers : tuple of str
        Linear / Conv2d layers whose output channels (weight rows, bias) are permuted. Several
        producers share the permutation when their outputs meet elementwise (a gated MLP's
        ``gate_proj`` and ``up_proj``).
    consumers : tuple of str
        Linear / Conv2d layers whose input channels (weight columns; a conv's axis 1) are permuted:
        the layers whose N:M groups the permutation is chosen for (their summed objective).
    channels : tuple of str, default ()
        Per-channel modules in between (BatchNorm1d/2d: affine parameters and running statistics;
        LayerNorm over the channel axis: affine parameters).
    head_size : int or None, default None
        Permute only within consecutive blocks of this many channels (attention heads: the value
        dimensions of each head; head order unchanged). A consumer may read each block several
        times (grouped-query attention: ``in = repeat * channels``, query head ``j`` reading key/value
        head ``j // repeat``).
    kind : str, default "user"
        What the group is (``"mlp"``, ``"conv"``, ``"attention"``, ...); shown in the report.
    """

    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    channels: tuple[str, ...] = ()
    head_size: int | None = None
    kind: str = "user"

    def __post_init__(self) -> None:
        for what in ("producers", "consumers", "channels"):
            value = getattr(self, what)
            if isinstance(value, str):  # a single name
                value = (value,)
            if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"PermutationGroup.{what} must be a sequence of module names, got {value!r}")
            object.__setattr__(self, what, tuple(value))
        if not self.producers or not self.consumers:
            raise ValueError(
                f"a PermutationGroup needs at least one producer and one consumer, got producers={self.producers!r}, "
                f"consumers={self.consumers!r}"
            )
        hs = self.head_size
        if hs is not None and (isinstance(hs, bool) or not isinstance(hs, int) or hs <= 0):
            raise ValueError(f"PermutationGroup.head_size must be a positive int or None, got {hs!r}")
        if not isinstance(self.kind, str):
            raise TypeError(f"PermutationGroup.kind must be a str, got {self.kind!r}")


@dataclass(frozen=True, eq=False)
class PermutedGroup:
    """One searched group of a :class:`PermutationReport`.

    Attributes
    ----------
    group : PermutationGroup
    permutation : ndarray of int64, shape (channels,)
        New order of the producers' output channels: new channel ``i`` is old channel
        ``permutation[i]`` (identity when the search found no gain).
    kept_before, kept_after : float
        Score kept by N:M along the consumers' input axis, summed over the consumers, before and
        after (``sum |W|`` for ``scores="magnitude"``, ``sum |W| * ||x_j||`` for ``"wanda"``).
        ``kept_after >= kept_before`` always.
    total : float
        Sum of all the consumers' scores (``kept / total`` is the kept fraction).
    seconds : float
        Wall time of the search.
    """

    group: PermutationGroup
    permutation: np.ndarray
    kept_before: float
    kept_after: float
    total: float
    seconds: float

    @property
    def gain(self) -> float:
        """``kept_after / kept_before - 1`` (0.0 when nothing was kept before)."""
        return self.kept_after / self.kept_before - 1.0 if self.kept_before > 0 else 0.0

    @property
    def changed(self) -> bool:
        """Whether a permutation other than the identity was applied."""
        return bool((self.permutation != np.arange(self.permutation.size)).any())


@dataclass(frozen=True)
class PermutationReport:
    """Outcome of :func:`permute_channels`; ``str(report)`` is a table with totals.

    Attributes
    ----------
    groups : tuple of PermutedGroup
        The permuted groups, in model order.
    skipped : tuple of LayerReport
        Linear / Conv2d layers whose input channels were left in their order, with the reason
        (a group that could not be permuted safely, the residual stream, include/exclude).
    pattern : str
        e.g. ``"2:4"``.
    scores : str
    method : str
    seconds : float
        Wall time of the whole call (calibration, searches, writing).
    residual : str
        With ``residual=True``: which residual stream was permuted, or why none was.
    output_permutation : ndarray of int64 or None
        When the residual stream was permuted and the model returns it (a bare encoder such as
        ``BertModel``, sentence embeddings, a ``LlamaModel`` without ``lm_head``): the model's output
        features now come out in this order (new feature ``i`` is old feature
        ``output_permutation[i]``; ``out[..., argsort(output_permutation)]`` undoes it). None when
        the outputs are unchanged.
    """

    groups: tuple[PermutedGroup, ...]
    skipped: tuple[LayerReport, ...] = field(default_factory=tuple)
    pattern: str = ""
    scores: str = ""
    method: str = ""
    seconds: float = 0.0
    residual: str = ""
    output_permutation: np.ndarray | None = None

    @property
    def kept_before(self) -> float:
        return float(sum(g.kept_before for g in self.groups))

    @property
    def kept_after(self) -> float:
        return float(sum(g.kept_after for g in self.groups))

    @property
    def permutations(self) -> dict[str, np.ndarray]:
        """The permutation of each permuted consumer's group, by consumer name (a grouped-query
        consumer reads it once per query head)."""
        out: dict[str, np.ndarray] = {}
        for g in self.groups:
            for name in g.group.consumers:
                out[name] = g.permutation
        return out

    def __str__(self) -> str:
        head = (
            f"{'consumers':<48} {'kind':<10} {'ch.':>6} {'kept before':>12} {'kept after':>12} {'gain':>7} {'sec.':>6}"
        )
        lines = [f"channel permutations for {self.pattern} (scores={self.scores}, method={self.method})", head]
        lines.append("-" * len(head))
        for g in self.groups:
            names = ", ".join(g.group.consumers)
            scale = g.total if g.total > 0 else 1.0
            lines.append(
                f"{names:<48} {g.group.kind:<10} {g.permutation.size:>6} {g.kept_before / scale:>12.4f} "
                f"{g.kept_after / scale:>12.4f} {100 * g.gain:>6.2f}% {g.seconds:>6.2f}"
            )
        lines.append("-" * len(head))
        gain = self.kept_after / self.kept_before - 1 if self.kept_before > 0 else 0.0
        lines.append(
            f"{f'total: {len(self.groups)} groups':<66} {self.kept_before:>12.4g} {self.kept_after:>12.4g} "
            f"{100 * gain:>6.2f}% {sum(g.seconds for g in self.groups):>6.2f}"
        )
        lines.append("(kept: fraction of the consumers' score kept by N:M along their input)")
        lines.append(f"wall time {self.seconds:.2f} s")
        if self.residual:
            lines.append(self.residual)
        if self.output_permutation is not None:
            lines.append(
                "note: the model's output features are permuted (output_permutation); outputs compare after undoing it"
            )
        for r in self.skipped:
            lines.append(f"not permuted: {r.name} ({r.reason})")
        return "\n".join(lines)


# --------------------------------------------------------------------------- discovery


# (kind, attention module path or None, producer paths, consumer path), relative to a transformer layer
_PATTERNS: tuple[tuple[str, str | None, tuple[str, ...], str], ...] = (
    ("mlp", None, ("intermediate.dense",), "output.dense"),  # BERT, RoBERTa, ViT, ...
    ("mlp", None, ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),  # Llama, Mistral, Qwen, ...
    ("mlp", None, ("ffn.lin1",), "ffn.lin2"),  # DistilBERT
    ("attention", "attention.self", ("attention.self.value",), "attention.output.dense"),  # BERT
    ("attention", "attention.attention", ("attention.attention.value",), "attention.output.dense"),  # ViT
    ("attention", "self_attn", ("self_attn.v_proj",), "self_attn.o_proj"),  # Llama
    ("attention", "attention", ("attention.v_lin",), "attention.out_lin"),  # DistilBERT
)


def _get(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _head_size(attn: nn.Module, consumer: nn.Module) -> int | None:
    """Head size of an attention module: its ``head_dim``-like attribute, else the consumer's input
    (every query head) over its number of heads (attribute or config)."""
    config = getattr(attn, "config", None)
    for owner, attrs in (
        (attn, ("head_dim", "attention_head_size", "head_size")),
        (config, ("head_dim",)),
        (attn, ("num_heads", "n_heads", "num_attention_heads")),
        (config, ("num_attention_heads", "n_heads")),
    ):
        for attr in attrs:
            v = getattr(owner, attr, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                if attr in ("head_dim", "attention_head_size", "head_size"):
                    return v
                cin = _channels_in(consumer)
                return cin // v if cin % v == 0 else None
    return None


def _pattern_groups(model: nn.Module, names: dict[int, str]) -> tuple[list[PermutationGroup], list[tuple[str, str]]]:
    """Groups of the transformer layer patterns, and (consumer, reason) of matches that fail."""
    groups: list[PermutationGroup] = []
    problems: list[tuple[str, str]] = []
    for base, module in model.named_modules():
        prefix = f"{base}." if base else ""
        for kind, attn_path, producer_paths, consumer_path in _PATTERNS:
            consumer = _get(module, consumer_path)
            producers = [_get(module, p) for p in producer_paths]
            if consumer is None or any(p is None for p in producers):
                continue
            head: int | None = None
            if attn_path is not None:
                attn = _get(module, attn_path)
                head = _head_size(attn, consumer) if attn is not None else None
                if head is None:
                    problems.append((prefix + consumer_path, "attention head size not found (no head_dim attribute)"))
                    continue
            groups.append(
                PermutationGroup(
                    producers=tuple(prefix + p for p in producer_paths),
                    consumers=(prefix + consumer_path,),
                    head_size=head,
                    kind=kind,
                )
            )
    return groups, problems


def _leaves(seq: nn.Sequential) -> list[nn.Module]:
    out: list[nn.Module] = []
    for child in seq:
        if isinstance(child, nn.Sequential):
            out.extend(_leaves(child))
        else:
            out.append(child)
    return out


def _elementwise(module: nn.Module) -> bool:
    if isinstance(module, nn.PReLU):
        return module.num_parameters == 1
    return isinstance(module, _ELEMENTWISE)


def _sequential_groups(model: nn.Module, names: dict[int, str]) -> list[PermutationGroup]:
    """Producer -> (per-channel | elementwise)* -> consumer chains inside nn.Sequential containers."""
    groups: list[PermutationGroup] = []
    for _, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        leaves = _leaves(seq)
        for i, first in enumerate(leaves):
            if not isinstance(first, _LAYERS):
                continue
            channels: list[nn.Module] = []
            for nxt in leaves[i + 1 :]:
                if isinstance(nxt, _LAYERS):
                    if (
                        isinstance(nxt, nn.Conv2d) == isinstance(first, nn.Conv2d)
                        and id(first) in names
                        and id(nxt) in names
                    ):
                        kind = "mlp" if isinstance(first, nn.Linear) else "conv"
                        groups.append(
                            PermutationGroup(
                                producers=(names[id(first)],),
                                consumers=(names[id(nxt)],),
                                channels=tuple(names[id(c)] for c in channels),
                                kind=kind,
                            )
                        )
                    break
                if isinstance(nxt, _PER_CHANNEL):
                    channels.append(nxt)
                elif not _elementwise(nxt):
                    break
    return groups


_FX_FUNCTIONS = {
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    nn.functional.relu,
    nn.functional.relu6,
    nn.functional.gelu,
    nn.functional.silu,
    nn.functional.mish,
    nn.functional.leaky_relu,
    nn.functional.elu,
    nn.functional.selu,
    nn.functional.hardswish,
    nn.functional.softplus,
    nn.functional.dropout,
}
_FX_METHODS = {"relu", "sigmoid", "tanh"}


def _fx_groups(model: nn.Module) -> list[PermutationGroup]:
    """Groups from the torch.fx graph of ``model`` (none when it does not trace symbolically).

    A Linear / Conv2d called once whose output reaches only Linear / Conv2d inputs (each called
    once), through elementwise functions and modules and per-channel modules that have no other
    input, is a group (several consumers share its permutation).
    """
    import warnings

    import torch.fx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # any model that does not trace is simply not analysed this way
        return []
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    modules = dict(model.named_modules())

    def only_input(user: Any, node: Any) -> bool:
        return list(user.all_input_nodes) == [node] and bool(user.args) and user.args[0] is node

    groups: list[PermutationGroup] = []
    for node in graph.nodes:
        if node.op != "call_module" or calls.get(node.target) != 1:
            continue
        producer = modules.get(node.target)
        if not isinstance(producer, _LAYERS):
            continue
        consumers: list[str] = []
        channels: list[str] = []
        frontier, ok = [node], True
        while frontier and ok:
            current = frontier.pop()
            if not current.users:
                ok = False
            for user in current.users:
                target = modules.get(user.target) if user.op == "call_module" else None
                stateful = isinstance(target, (*_LAYERS, *_PER_CHANNEL))
                if not only_input(user, current) or (stateful and calls.get(user.target) != 1):
                    ok = False
                elif isinstance(target, _LAYERS):
                    consumers.append(user.target)
                elif isinstance(target, _PER_CHANNEL):
                    channels.append(user.target)
                    frontier.append(user)
                elif (
                    (target is not None and _elementwise(target))
                    or (user.op == "call_function" and user.target in _FX_FUNCTIONS)
                    or (user.op == "call_method" and user.target in _FX_METHODS)
                ):
                    frontier.append(user)
                else:
                    ok = False
        if ok and consumers:
            kind = "mlp" if isinstance(producer, nn.Linear) else "conv"
            groups.append(PermutationGroup((node.target,), tuple(consumers), tuple(channels), kind=kind))
    return groups


def _discover(model: nn.Module, names: dict[int, str]) -> tuple[list[PermutationGroup], list[tuple[str, str]]]:
    groups, problems = _pattern_groups(model, names)
    groups += _sequential_groups(model, names)
    groups += _fx_groups(model)
    return groups, problems


# --------------------------------------------------------------------------- checks


def _parameters_shared(model: nn.Module) -> set[int]:
    """ids of parameters/buffers held by more than one module (tied weights)."""
    count: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            count[id(t)] = count.get(id(t), 0) + 1
    return {k for k, v in count.items() if v > 1}


@dataclass
class _Plan:
    """A checked group: its modules, channel count and per-consumer repeat (grouped-query attention)."""

    group: PermutationGroup
    producers: list[nn.Module]
    channels: list[nn.Module]
    consumers: list[nn.Module]
    size: int  # channels C
    head: int  # block size (C when the group has no heads)
    repeats: list[int]  # per consumer: in = repeat * C
    embeddings: list[nn.Module] = field(default_factory=list)  # residual stream: Embedding columns
    readers: list[nn.Module] = field(default_factory=list)  # residual stream: columns, outside the objective
    output_permuted: bool = False  # residual stream: the model returns it


def _channels_out(module: nn.Module) -> int:
    return int(module.weight.shape[0])


def _channels_in(module: nn.Module) -> int:
    return int(module.weight.shape[1])


def _check_group(
    model: nn.Module, group: PermutationGroup, m: int, shared: set[int], chosen: Any
) -> tuple[_Plan | None, str]:
    """A plan, or None and the reason the group cannot be permuted safely."""
    mods: dict[str, nn.Module] = {}
    for name in group.producers + group.channels + group.consumers:
        module = _get(model, name)
        if module is None:
            return None, f"{name!r} is not a submodule of the model"
        mods[name] = module
    if len(set(group.producers + group.channels + group.consumers)) != len(
        group.producers + group.channels + group.consumers
    ):
        return None, "a module is listed twice in the group"
    for name in group.producers + group.consumers:
        module = mods[name]
        if not isinstance(module, _LAYERS):
            return None, f"{name} is a {type(module).__name__}, not a Linear or Conv2d"
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            return None, f"{name} is a grouped convolution (groups={module.groups})"
        if parametrize.is_parametrized(module):
            return None, f"{name} carries a mask or another parametrization (bake or remove it first)"
        if not module.weight.dtype.is_floating_point:
            return None, f"{name} has {module.weight.dtype} weights"
    for name in group.channels:
        if not isinstance(mods[name], _PER_CHANNEL):
            return None, f"{name} is a {type(mods[name]).__name__}, not a BatchNorm1d/2d or LayerNorm"
    for name, module in mods.items():
        tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        if any(id(t) in shared for t in tensors):
            return None, f"{name} shares a parameter with another module (tied weights)"
    unchosen = [name for name in group.consumers if not chosen(name)]
    if unchosen:
        return None, f"consumer {unchosen[0]} not chosen by include/exclude"
    producers = [mods[p] for p in group.producers]
    size = _channels_out(producers[0])
    if any(_channels_out(p) != size for p in producers):
        return None, f"producers have different output channels {[_channels_out(p) for p in producers]}"
    for name in group.channels:
        c = mods[name]
        count = c.num_features if isinstance(c, nn.modules.batchnorm._NormBase) else None
        if isinstance(c, nn.LayerNorm):
            count = c.normalized_shape[0] if len(c.normalized_shape) == 1 else None
        if count != size:
            return None, f"{name} does not act on the {size} channels one by one"
        conv = isinstance(producers[0], nn.Conv2d)
        if conv != isinstance(c, nn.BatchNorm2d):  # a LayerNorm after a conv normalises the last axis
            return None, f"{name} ({type(c).__name__}) does not act on the channels of a {type(producers[0]).__name__}"
    head = size if group.head_size is None else group.head_size
    if size % head:
        return None, f"{size} channels are not a multiple of head_size={head}"
    consumers = [mods[c] for c in group.consumers]
    repeats: list[int] = []
    for name, c in zip(group.consumers, consumers, strict=True):
        cin = _channels_in(c)
        if cin % size or (group.head_size is None and cin != size):
            return None, f"{name} reads {cin} channels, the producers write {size}"
        if cin % m:
            return None, f"{name} has in={cin}, not a multiple of m={m}"
        if head % m:
            return None, f"head_size={head} is not a multiple of m={m}: N:M groups would straddle heads"
        repeats.append(cin // size)
    for name, module in mods.items():
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if t.dtype.is_floating_point and not bool(torch.isfinite(t.detach()).all()):
                return None, f"{name} holds NaN or inf"
    kinds = {type(p) for p in producers} | {type(c) for c in consumers}
    if len(kinds) != 1:
        return None, "producers and consumers mix Linear and Conv2d layers"
    return _Plan(group, producers, [mods[c] for c in group.channels], consumers, size, head, repeats), ""


# --------------------------------------------------------------------------- scores


def _score_matrix(module: nn.Module, norms: np.ndarray | None) -> np.ndarray:
    """``|W|`` (times the input norms) as ``[rows, in]`` in float64 (a conv's channel-last view)."""
    w = np.abs(np.asarray(to_numpy(module.weight), dtype=np.float64))
    if w.ndim > 2:
        w = np.moveaxis(w, 1, -1).reshape(-1, w.shape[1])
    if norms is not None:
        w = w * norms[None, :]
    return w


def _collect_norms(
    model: nn.Module, consumers: list[nn.Module], calibration: Any
) -> dict[int, tuple[torch.Tensor, int]]:
    """Sum of squares of each consumer's input channels over the calibration tokens."""
    from nmsolve.torch._batches import call_arguments, model_device, token_mask

    if isinstance(calibration, (torch.Tensor, Mapping, str, bytes)) or not isinstance(calibration, Iterable):
        raise TypeError(
            "calibration must be an iterable of batches (a list, a DataLoader, ...), got a "
            f"{type(calibration).__name__}; wrap a single batch in a list: [batch]"
        )
    sums: dict[int, tuple[torch.Tensor, int]] = {}
    state: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        if isinstance(module, nn.Conv2d):
            sq = x.to(torch.float64).pow(2).sum(dim=tuple(d for d in range(x.dim()) if d != x.dim() - 3))
            rows = x.numel() // x.shape[-3]
        else:
            tokens = state.get("tokens")
            if tokens is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(tokens.shape):
                x = x[tokens.to(x.device)]
            x = x.reshape(-1, x.shape[-1]).to(torch.float64)
            sq = x.pow(2).sum(dim=0)
            rows = x.shape[0]
        old = sums.get(id(module))
        sums[id(module)] = (sq if old is None else old[0] + sq, rows + (0 if old is None else old[1]))

    handles = [c.register_forward_pre_hook(hook) for c in consumers]
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    device = model_device(model)
    count = 0
    try:
        with torch.no_grad():
            for index, batch in enumerate(calibration):
                args, kwargs = call_arguments(batch, index, device)
                state["tokens"] = token_mask(args, kwargs)
                model(*args, **kwargs)
                count += 1
    finally:
        for h in handles:
            h.remove()
        for module, flag in flags:
            module.training = flag
    if not count:
        raise ValueError("calibration holds no batches; pass a non-empty iterable of batches")
    return sums


# --------------------------------------------------------------------------- search and apply


def _search(
    plan: _Plan, n: int, m: int, norms: dict[int, np.ndarray], method: str, options: Mapping[str, Any]
) -> PermutedGroup:
    from nmsolve.permutation.channel import channel_permutation

    start = time.perf_counter()
    mats = [_score_matrix(c, norms.get(id(c))) for c in plan.consumers]
    size, head = plan.size, plan.head
    perm = np.arange(size, dtype=np.int64)
    before = after = 0.0
    for b in range(size // head):
        blocks = []
        for mat, repeat in zip(mats, plan.repeats, strict=True):
            for r in range(repeat):
                lo = (b * repeat + r) * head
                blocks.append(mat[:, lo : lo + head])
        stacked = np.vstack(blocks)
        res = channel_permutation(stacked, n, m, method=method, **{"rng": 0, **options})
        perm[b * head : (b + 1) * head] = b * head + res.permutation
        before += res.kept_before
        after += res.kept_after
    total = float(sum(mat.sum() for mat in mats))
    return PermutedGroup(plan.group, perm, before, after, total, time.perf_counter() - start)


def _take(t: torch.Tensor, dim: int, index: torch.Tensor) -> None:
    with torch.no_grad():
        t.copy_(t.index_select(dim, index.to(t.device)))


def _apply(plan: _Plan, perm: np.ndarray) -> None:
    index = torch.from_numpy(perm)
    done: set[tuple[int, int]] = set()  # (tensor, dim): a tied tensor (embeddings and lm_head) is permuted once

    def take(t: torch.Tensor, dim: int, idx: torch.Tensor) -> None:
        if (id(t), dim) not in done:
            done.add((id(t), dim))
            _take(t, dim, idx)

    for p in plan.producers:
        take(p.weight, 0, index)
        if p.bias is not None:
            take(p.bias, 0, index)
    for c in plan.channels:
        for t in list(c.parameters(recurse=False)) + list(c.buffers(recurse=False)):
            if t.dim() == 1 and t.shape[0] == plan.size:  # not num_batches_tracked
                take(t, 0, index)
    for e in plan.embeddings:
        take(e.weight, 1, index)
    for c in plan.readers:
        take(c.weight, 1, index)
    for c, repeat in zip(plan.consumers, plan.repeats, strict=True):
        if repeat == 1:
            cols = index
        else:  # query head j of block b = j // repeat reads key/value head b
            blocks = plan.size // plan.head
            per_block = index.view(blocks, plan.head) - torch.arange(blocks).view(blocks, 1) * plan.head
            heads = blocks * repeat
            cols = (per_block.repeat_interleave(repeat, dim=0) + torch.arange(heads).view(heads, 1) * plan.head).view(
                -1
            )
        take(c.weight, 1, cols)


# --------------------------------------------------------------------------- the residual stream

# the transformer layouts whose residual stream (hidden states) can be permuted as a whole, relative to
# the module holding the embeddings and the layer list
_STREAMS: tuple[dict[str, Any], ...] = (
    {  # BERT, RoBERTa, MiniLM, ...
        "embeddings": (
            "embeddings.word_embeddings",
            "embeddings.position_embeddings",
            "embeddings.token_type_embeddings",
        ),
        "norms": ("embeddings.LayerNorm",),
        "layers": "encoder.layer",
        "layer_norms": ("attention.output.LayerNorm", "output.LayerNorm"),
        "layer_readers": ("attention.self.query", "attention.self.key", "attention.self.value", "intermediate.dense"),
        "layer_writers": ("attention.output.dense", "output.dense"),
        "final_norms": (),
        "heads": ("pooler.dense",),  # a reader of the stream that is not part of it
    },
    {  # Llama, Mistral, Qwen, ...
        "embeddings": ("embed_tokens",),
        "norms": (),
        "layers": "layers",
        "layer_norms": ("input_layernorm", "post_attention_layernorm"),
        "layer_readers": (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
        ),
        "layer_writers": ("self_attn.o_proj", "mlp.down_proj"),
        "final_norms": ("norm",),
        "heads": (),
    },
)


def _is_norm(module: nn.Module, size: int) -> bool:
    """A LayerNorm / RMSNorm over the last axis of ``size`` channels (its statistics do not depend on
    the order of the channels)."""
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape) == (size,)
    rms = getattr(nn, "RMSNorm", None)
    if (rms is not None and isinstance(module, rms)) or type(module).__name__.endswith("RMSNorm"):
        weight = getattr(module, "weight", None)
        return isinstance(weight, torch.Tensor) and tuple(weight.shape) == (size,)
    return False


def _residual_plan(model: nn.Module, names: dict[int, str], m: int, chosen: Any) -> tuple[_Plan | None, str, str]:
    """The residual-stream plan of the first known layout found, or None, the reason and where."""
    for base_name, base in model.named_modules():
        for layout in _STREAMS:
            first = _get(base, layout["embeddings"][0])
            layers = _get(base, layout["layers"])
            if not isinstance(first, nn.Embedding) or not isinstance(layers, nn.ModuleList) or not len(layers):
                continue
            prefix = f"{base_name}." if base_name else ""
            plan, reason = _stream(model, base, prefix, layout, layers, first.embedding_dim, names, m, chosen)
            return plan, reason, base_name or "<model>"
    return None, "no known transformer layout (BERT- or Llama-style embeddings and layer list)", ""


def _stream(
    model: nn.Module,
    base: nn.Module,
    prefix: str,
    layout: dict[str, Any],
    layers: nn.ModuleList,
    size: int,
    names: dict[int, str],
    m: int,
    chosen: Any,
) -> tuple[_Plan | None, str]:
    embeddings = [e for e in (_get(base, p) for p in layout["embeddings"]) if e is not None]
    norms = [x for x in (_get(base, p) for p in layout["norms"] + layout["final_norms"]) if x is not None]
    if len(norms) != len(layout["norms"] + layout["final_norms"]):
        return None, f"a norm of {list(layout['norms'] + layout['final_norms'])} is missing"
    readers: list[nn.Module] = []
    writers: list[nn.Module] = []
    for i, layer in enumerate(layers):
        parts = {p: _get(layer, p) for p in layout["layer_norms"] + layout["layer_readers"] + layout["layer_writers"]}
        missing = [p for p, x in parts.items() if x is None]
        if missing:
            return None, f"layer {i} has no {missing[0]}"
        norms += [parts[p] for p in layout["layer_norms"]]  # type: ignore[misc]
        readers += [parts[p] for p in layout["layer_readers"]]  # type: ignore[misc]
        writers += [parts[p] for p in layout["layer_writers"]]  # type: ignore[misc]
    heads = [x for x in (_get(base, p) for p in layout["heads"]) if x is not None]
    # a reader of the stream outside the base module: a language-model head (Llama's lm_head)
    outer = [x for name, x in model.named_modules() if name.endswith("lm_head") and isinstance(x, nn.Linear)]
    heads += [x for x in outer if x.in_features == size]
    for e in embeddings:
        if not isinstance(e, nn.Embedding) or e.embedding_dim != size:
            return None, f"{names.get(id(e))} is not an Embedding of dimension {size}"
    for x in norms:
        if not _is_norm(x, size):
            return None, f"{names.get(id(x))} is a {type(x).__name__}, not a LayerNorm/RMSNorm over {size} channels"
    for x in readers + heads:
        if not isinstance(x, nn.Linear) or x.in_features != size:
            return None, f"{names.get(id(x))} does not read the {size} hidden channels"
    for x in writers:
        if not isinstance(x, nn.Linear) or x.out_features != size:
            return None, f"{names.get(id(x))} does not write the {size} hidden channels"
    members = embeddings + norms + readers + writers + heads
    known = {id(x) for x in members}
    for x in members:
        if parametrize.is_parametrized(x):
            return None, f"{names.get(id(x))} carries a mask or another parametrization (bake or remove it first)"
    # every other tensor of the hidden size inside the base module: something this layout does not know
    for name, module in base.named_modules():
        if id(module) in known:
            continue
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if t.dtype.is_floating_point and size in tuple(t.shape):
                return None, f"{prefix}{name} holds a tensor of the hidden size {size} that is not known to be safe"
    inside = {id(mod) for mod in base.modules()}
    for name, module in model.named_modules():  # outside: a head reading the hidden states it does not know
        if id(module) in inside or id(module) in known:
            continue
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if t.dtype.is_floating_point and size in tuple(t.shape):
                return (
                    None,
                    f"{name} (outside {prefix[:-1] or 'the model'}) may read the hidden states; not known to be safe",
                )
    if size % m:
        return None, f"the hidden size {size} is not a multiple of m={m}"
    objective = [x for x in readers if chosen(names[id(x)])]
    if not objective:
        return None, "no reader of the residual stream is chosen by include/exclude"
    others = [x for x in readers + heads if x not in objective]
    group = PermutationGroup(
        producers=tuple(names[id(x)] for x in writers),
        consumers=tuple(names[id(x)] for x in objective),
        channels=tuple(names[id(x)] for x in norms),
        kind="residual",
    )
    return (
        _Plan(
            group,
            writers,
            norms,
            objective,
            size,
            size,
            [1] * len(objective),
            embeddings=embeddings,
            readers=others,
            output_permuted=not outer,
        ),
        "",
    )


# --------------------------------------------------------------------------- the public function


def permute_channels(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    *,
    scores: str = "magnitude",
    calibration: Iterable[Any] | None = None,
    groups: str | Sequence[PermutationGroup] = "auto",
    method: str = "tabu",
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    residual: bool = False,
    progress: bool = True,
) -> PermutationReport:
    """Permute channels of ``model`` in place, leaving its function unchanged, so that N:M keeps more.

    For every group (a producer's output channels feeding a consumer's input channels through
    elementwise or per-channel modules only), a permutation of the channels is searched with
    :func:`nmsolve.channel_permutation` on the consumers' scores (stacked row-wise: the summed
    objective of all consumers of the group), and applied to the producers' weight rows and
    biases, to the per-channel modules in between and to the consumers' weight columns. The
    outputs of the model are unchanged up to float rounding; N:M along the consumers' input axis
    (:func:`nmsolve.torch.sparsify`, :func:`nmsolve.torch.prune_oneshot`) then keeps more, and the
    pruned weights are N:M in their stored order.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place (the parameter and buffer tensors keep their identity). Weights must not
        carry masks yet (prune after permuting).
    n, m : int
        The N:M pattern the permutation is chosen for (``0 < n < m``): keep ``n`` of every ``m``.
    scores : {"magnitude", "wanda"}
        The objective: ``|W|`` kept, or Wanda's ``|W_ij| * ||x_j||`` with the input norms of each
        consumer measured on ``calibration``.
    calibration : iterable of batches, optional
        Required by ``scores="wanda"`` (and refused otherwise): batches as for
        :func:`nmsolve.torch.prune_oneshot` (a tensor, a tuple of positional arguments or a dict of
        keyword arguments of the model's forward; padding tokens of an ``attention_mask`` are left
        out). The model is run once on each, in eval mode without gradients.
    groups : "auto" or sequence of PermutationGroup
        ``"auto"`` finds (by module names and types): the MLP of transformer layers (BERT-style
        ``intermediate.dense`` -> ``output.dense``, Llama-style ``mlp.gate_proj`` and
        ``mlp.up_proj`` -> ``mlp.down_proj``, DistilBERT ``ffn.lin1`` -> ``ffn.lin2``); the value
        dimensions of every attention head (``attention.self.value`` -> ``attention.output.dense``,
        ``self_attn.v_proj`` -> ``self_attn.o_proj``, grouped-query attention included), permuted
        within each head; inside every ``nn.Sequential`` (nested ones flattened), each
        Linear -> Linear or Conv2d -> Conv2d chain whose modules in between are elementwise
        activations, dropout or per-channel BatchNorm/LayerNorm; and, when the model traces with
        ``torch.fx.symbolic_trace``, every Linear / Conv2d whose output reaches only the inputs of
        Linear / Conv2d layers through elementwise functions (relu, gelu, silu, ...) and modules and
        per-channel modules (a ResNet bottleneck's conv1 -> bn1 -> relu -> conv2; one producer read
        by several consumers shares one permutation). Or give the groups yourself.
    method : str, default "tabu"
        The search of :func:`nmsolve.channel_permutation` (a key of
        :data:`nmsolve.permutation.channel.METHODS`).
    include, exclude : str or sequence of str, optional
        Glob patterns on qualified module names choosing the consumers (as in
        :func:`nmsolve.torch.sparsify`); a group is permuted only when all its consumers are chosen.
    options : mapping, optional
        Extra keyword options of :func:`nmsolve.channel_permutation` (``time_limit``, ``max_iter``,
        ``rng``, ...; ``rng`` defaults to 0, so the result is reproducible). They apply to each
        search: one per group, one per head of an attention group (so ``time_limit=1`` costs about a
        second per head).
    residual : bool, default False
        Also permute the residual stream (hidden states) of a BERT- or Llama-style transformer as a
        whole: the embeddings' columns, every LayerNorm/RMSNorm, the rows of every layer that writes
        it (attention output, MLP output) and the columns of every layer that reads it (query, key,
        value, the MLP's first layers; pooler / ``lm_head`` too), chosen for the summed objective of
        the readers inside the layers. Refused (with the reason in ``report.residual``) when any
        tensor of the hidden size is not one of these. With an ``lm_head`` the logits are unchanged;
        a model that returns the hidden states (``BertModel``, sentence embeddings) returns them
        permuted by ``report.output_permutation`` (dot products and cosines between its outputs are
        unchanged).
    progress : bool, default True
        Show a progress bar over the groups.

    Returns
    -------
    PermutationReport
        Per group: the permutation, the objective before and after, the time; the layers whose
        inputs were not permuted and why.

    Raises
    ------
    ValueError
        ``n >= m``, an unknown ``scores`` or ``method``, ``scores="wanda"`` without calibration
        (or calibration with ``"magnitude"``), no calibration batch, a bad option of the search.
    TypeError
        A model that is not a module, ``groups`` that is neither ``"auto"`` nor a sequence of
        PermutationGroup, a bad batch.

    All of these are raised before the model is changed: every permutation is searched before
    any is written.

    Notes
    -----
    A group that cannot be permuted safely is left alone and its consumers are listed in
    ``report.skipped`` with the reason: a consumer's ``in`` (or a head size) not a multiple of
    ``m``, a module with a mask or another parametrization, tied parameters, a grouped convolution,
    channel counts that do not match, NaN or inf. A consumer is permuted by at most one group (the
    first found). Layers reading the residual stream (query/key/value, the MLP's first layer, ...)
    and layers reading the model's input are listed as not permuted. Automatic discovery relies on
    the module names of the usual implementations: a model that reuses these names for something
    else (a producer whose output is also read elsewhere) should pass its groups explicitly.

    Examples
    --------
    >>> import torch, nmsolve.torch as nt
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    >>> x = torch.randn(4, 16)
    >>> y = model(x)
    >>> report = nt.permute_channels(model, 2, 4, progress=False)
    >>> torch.allclose(model(x), y, atol=1e-6), report.kept_after >= report.kept_before
    (True, True)
    >>> [r.name for r in report.skipped]
    ['0']
    """
    from nmsolve.permutation.channel import METHODS

    start = time.perf_counter()
    check_model(model)
    n, m = check_nm(n, m, allow_dense=False)
    if not isinstance(scores, str) or scores not in SCORES:
        raise ValueError(f"scores must be one of {list(SCORES)}, got {scores!r}")
    choose(METHODS, method)
    progress = check_bool(progress, "progress")
    residual = check_bool(residual, "residual")
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping of channel_permutation keyword options, got {options!r}")
    opts = dict(options or {})
    bad = sorted(set(opts) & {"n", "m", "method", "W", "progress"})
    if bad:
        raise ValueError(f"options must not set {bad}: they are arguments of permute_channels itself")
    if scores == "wanda" and calibration is None:
        raise ValueError("scores='wanda' needs calibration batches (calibration=[batch, ...])")
    if scores == "magnitude" and calibration is not None:
        raise ValueError("calibration is only used by scores='wanda'; got calibration with scores='magnitude'")
    inc, exc = _patterns(include, "include"), _patterns(exclude, "exclude")

    def chosen(name: str) -> bool:
        if inc is not None and not any(fnmatch.fnmatchcase(name, p) for p in inc):
            return False
        return not (exc is not None and any(fnmatch.fnmatchcase(name, p) for p in exc))

    names = {id(module): name for name, module in model.named_modules()}
    problems: list[tuple[str, str]] = []
    if isinstance(groups, str):
        if groups != "auto":
            raise ValueError(f"groups must be 'auto' or a sequence of PermutationGroup, got {groups!r}")
        candidates, problems = _discover(model, names)
    elif isinstance(groups, Sequence) and all(isinstance(g, PermutationGroup) for g in groups):
        candidates = list(groups)
    else:
        raise TypeError(f"groups must be 'auto' or a sequence of PermutationGroup, got {groups!r:.120}")

    shared = _parameters_shared(model)
    plans: list[_Plan] = []
    taken: set[str] = set()
    produced: set[str] = set()
    for group in candidates:
        if any(c in taken for c in group.consumers):
            continue  # found twice (a nested Sequential) or given twice: the first wins
        plan, reason = _check_group(model, group, m, shared, chosen)
        taken.update(group.consumers)
        if plan is not None and produced & set(group.producers):
            plan, reason = None, f"producer {sorted(produced & set(group.producers))[0]} is in another group"
        if plan is not None:
            produced.update(group.producers)
        if plan is None:
            problems.extend((c, reason) for c in group.consumers)
        else:
            plans.append(plan)
    stream = ""
    if residual:
        plan, reason, where = _residual_plan(model, names, m, chosen)
        if plan is not None and taken & set(plan.group.consumers):
            plan, reason = None, f"a reader is in another group: {sorted(taken & set(plan.group.consumers))[0]}"
        if plan is None:
            stream = f"residual stream not permuted: {reason}" + (f" ({where})" if where else "")
        else:
            plans.append(plan)
            stream = f"residual stream of {where}"

    # every search runs before anything is written: a failure leaves the model as it was
    norms: dict[int, np.ndarray] = {}
    if scores == "wanda":
        consumers = [c for plan in plans for c in plan.consumers]
        for key, (sq, _rows) in _collect_norms(model, consumers, calibration).items():
            norms[key] = np.sqrt(sq.cpu().numpy())
        missing = [plan for plan in plans if any(id(c) not in norms for c in plan.consumers)]
        for plan in missing:
            problems.extend((c, "not called during calibration") for c in plan.group.consumers)
        plans = [plan for plan in plans if plan not in missing]
    results: list[PermutedGroup] = []
    bar = progress_bar(len(plans), progress, f"permute_channels {n}:{m}", "group")
    try:
        for plan in plans:
            try:
                results.append(_search(plan, n, m, norms, method, opts))
            except (ValueError, TypeError) as err:
                raise type(err)(f"group {list(plan.group.consumers)}: {err}") from err
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    for plan, result in zip(plans, results, strict=True):
        if result.changed:
            _apply(plan, result.permutation)

    output_permutation = None
    for plan, result in zip(plans, results, strict=True):
        if plan.output_permuted and result.changed:
            output_permutation = result.permutation
    order = {name: i for i, name in enumerate(names.values())}
    permuted = {c for plan in plans for c in plan.group.consumers}
    permuted |= {names[id(x)] for plan in plans for x in plan.readers}
    reasons = dict(problems)
    skipped = []
    for name, module in model.named_modules():
        if not isinstance(module, _LAYERS) or name in permuted:
            continue
        reason = reasons.get(name)
        if reason is None:
            reason = (
                "not matched by include/exclude"
                if not chosen(name)
                else "its input is not produced by a layer this function can permute (residual stream, model input)"
            )
        skipped.append(LayerReport(name, module_kind(module), tuple(module.weight.shape), reason=reason))
    results.sort(key=lambda r: order.get(r.group.consumers[0], len(order)))
    return PermutationReport(
        groups=tuple(results),
        skipped=tuple(skipped),
        pattern=f"{n}:{m}",
        scores=scores,
        method=method,
        seconds=time.perf_counter() - start,
        residual=stream,
        output_permutation=output_permutation,
    )
