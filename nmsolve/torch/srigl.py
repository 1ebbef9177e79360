"""SRigL for torch: constant fan-in dynamic sparse training, and the condensed linear layer for inference.

:class:`SRigL` is a :class:`~nmsolve.torch.sparse_training.SparseTraining` method: every chosen layer
(Linear or Conv2d; rows = output channels, fan-in = everything else) keeps a constant fan-in mask
that :func:`nmsolve.rigl_update` rewires every ``delta`` steps (drop by magnitude, grow by the
dense gradient, ablate rows with too few salient weights). The backward pass leaves the gradient
dense; :meth:`SRigL.before_optimizer_step` keeps a host copy of it when an update is due (growth
ranks the pruned entries by it) and then zeroes it in place on the pruned entries, so pruned
weights receive no gradient and stay exactly zero.

:class:`CondensedLinear` replaces a trained constant fan-in ``nn.Linear`` by its condensed form
(per active row ``k`` values and ``k`` column indices): the forward pass is a gather and a row-wise
dot product, by a Numba kernel on CPU inference or by ``index_select`` + multiply + sum elsewhere
(any device, differentiable).

Example
-------
>>> import torch, nmsolve.torch as nt
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> srigl = nt.SRigL(model, sparsity=0.75, t_end=30, delta=10, optimizer=opt, rng=0)
>>> for step in range(40):
...     x = torch.randn(8, 16)
...     loss = model(x).pow(2).mean()
...     opt.zero_grad()
...     loss.backward()
...     srigl.before_optimizer_step()
...     opt.step()
...     srigl.after_optimizer_step()
>>> srigl.check()  # constant fan-in on every layer
>>> masks = srigl.bake()  # plain weights with zeros; the masks by layer name
>>> fast = nt.CondensedLinear.from_linear(model[0], masks["0"])
>>> bool(torch.allclose(fast(x), model[0](x), atol=1e-5))
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nmsolve._validate import check_bool
from nmsolve.fanin import CondensedMatrix, condense, is_constant_fanin
from nmsolve.fanin._product import linear_unchecked
from nmsolve.torch._convert import to_mask, to_numpy
from nmsolve.torch.sparse_training import Layer, SparseTraining
from nmsolve.training.srigl import (
    SRIGL_ALPHA,
    SRIGL_DELTA,
    SRIGL_GAMMA_SAL,
    SRigLSchedule,
    SRigLState,
)

_BACKENDS = ("auto", "numba", "torch")
# Above this batch the torch backend scatters the values into a dense weight and calls F.linear: the
# gathered (batch, n_active, k) tensor would cost more memory traffic than a dense GEMM.
_GATHER_MAX_BATCH = 4
_HOST_DTYPES = (torch.float32, torch.float64)


class SRigL(SparseTraining):
    """Structured RigL: constant fan-in masks rewired by magnitude and gradient, with neuron ablation.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place (masks attached to the chosen layers).
    sparsity : float, default 0.9
        Fraction of zeros per layer; every active row keeps ``floor((1 - sparsity) * fan_in)``
        inputs (0.5 keeps as many weights as 2:4, 0.75 as 1:4).
    t_end : int
        Last step (exclusive) with a mask update: 75% of the training steps in the paper.
    delta : int, default 100
        Steps between mask updates.
    alpha : float, default 0.3
        Initial drop fraction (cosine-annealed to 0 at ``t_end``).
    gamma_sal : float, default 0.3
        A row with fewer than ``gamma_sal * k`` salient weights is ablated; 0 disables ablation.
    init : {"random", "magnitude"}, default "random"
        The first mask: random constant fan-in (as published) or the top-``k`` ``|w|`` per row.
    rng : None, int or numpy Generator
        Seed of the random first masks.
    optimizer : torch.optim.Optimizer, optional
        If given, its per-weight state (momentum, Adam moments) is zeroed on entries that an update
        deactivates or grows, as in the published code.
    ablate_last : bool, default False
        Allow ablation in the last chosen layer (usually the classifier, whose rows are classes).
    **kwargs
        ``include``, ``exclude``, ``types``, ``dense_first_last`` of
        :class:`~nmsolve.torch.sparse_training.SparseTraining`.

    Notes
    -----
    Use it from a plain loop (``loss.backward()``, ``before_optimizer_step()``, ``opt.step()``,
    ``after_optimizer_step()``; leaving out ``before_optimizer_step`` is an error, since it masks
    the gradients). The update runs in ``after_optimizer_step`` after steps
    ``delta, 2 * delta, ... < t_end``, from the updated weights and the dense gradient of that
    step's backward pass. Dropped and grown weights are set to zero in the dense parameter, so
    pruned weights stay exactly zero throughout. Per step the cost is one in-place pass over each
    gradient (plus the masked forward weight of every mask parametrization); an update adds a host
    copy of the gradient and :func:`nmsolve.rigl_update` (``O(size)``). The per-layer state
    (budget, fan-in, active rows) is in :meth:`state_dict`; the masks are in ``model.state_dict()``.
    After :meth:`bake`, :meth:`CondensedLinear.from_linear` turns a Linear into its condensed form.

    References
    ----------
    M. Lasby, A. Golubeva, U. Evci, M. Nica, Y. Ioannou, "Dynamic Sparse Training with Structured
    Sparsity", ICLR 2024.
    """

    name: ClassVar[str] = "srigl"
    # The gradient stays dense through the backward pass and is masked in place in
    # before_optimizer_step: one pass and no new tensor per step (and the dense copy only when due).
    straight_through: ClassVar[bool] = True
    capture_grad: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        sparsity: float = 0.9,
        *,
        t_end: int,
        delta: int = SRIGL_DELTA,
        alpha: float = SRIGL_ALPHA,
        gamma_sal: float = SRIGL_GAMMA_SAL,
        init: str = "random",
        rng: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        ablate_last: bool = False,
        **kwargs: Any,
    ) -> None:
        from nmsolve._validate import as_rng
        from nmsolve.fanin import fanin_for_sparsity

        fanin_for_sparsity(1, sparsity)  # validates sparsity before any layer is touched
        ablate_last = check_bool(ablate_last, "ablate_last")
        self.sparsity = float(sparsity)
        self.schedule = SRigLSchedule(t_end=t_end, delta=delta, alpha=alpha, gamma_sal=gamma_sal)
        if init not in ("random", "magnitude"):
            raise ValueError(f"init must be one of ['random', 'magnitude'], got {init!r}")
        self.init = init
        self._rng = as_rng(rng)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {optimizer!r:.80}")
        self.optimizer = optimizer
        self._dense_grads: dict[str, np.ndarray] = {}
        self._masked_before = -1
        self._no_grad: dict[str, int] = {}  # per layer, mask updates skipped for want of a gradient
        super().__init__(model, **kwargs)
        with torch.no_grad():  # start from exact zeros outside the mask, as RigL does (once every layer is set up)
            for layer in self.layers.values():
                layer.weight.masked_fill_(layer.mask == 0, 0.0)  # exact zeros (inf * 0 would be NaN)
        if self.layers and not ablate_last:
            list(self.layers.values())[-1].state["srigl"].ablate = False

    # ------------------------------------------------------------------ per-layer hooks

    def setup_layer(self, layer: Layer) -> None:
        state = SRigLState.start(self.weight_numpy(layer), self.sparsity, init=self.init, rng=self._rng)
        layer.state["srigl"] = state
        self.set_mask(layer, state.mask)

    def before_optimizer_step(self) -> None:
        """Call after ``loss.backward()`` and before ``optimizer.step()``: masks the weight gradients."""
        super().before_optimizer_step()
        self._masked_before = self.step + 1

    def after_optimizer_step(self) -> None:
        """Call after ``optimizer.step()``: counts the step and rewires the masks when an update is due.

        A layer without a gradient at an update step (it took no part in the loss, e.g. a BERT
        ``pooler.dense`` when only the hidden states are used) keeps its mask; :meth:`report` says
        how many updates it missed. If no layer has a gradient at an update step, that is an error.
        """
        if self._masked_before != self.step + 1 and any(lay.weight.grad is not None for lay in self.layers.values()):
            raise RuntimeError(
                "SRigL: call method.before_optimizer_step() after loss.backward() and before optimizer.step(); "
                "it masks the gradients (without it pruned weights are trained) and keeps the dense gradient "
                "that growth needs"
            )
        if self.layers and self.schedule.due(self.step + 1) and not self._dense_grads:
            raise RuntimeError(
                f"SRigL update at step {self.step + 1}: none of the {len(self.layers)} sparse layers has a "
                "gradient when method.before_optimizer_step() ran; call method.before_optimizer_step() after "
                "loss.backward() and before optimizer.step() (a layer that takes no part in the loss keeps its "
                "mask, but some layer must have a gradient)"
            )
        super().after_optimizer_step()

    def on_before_step(self, layer: Layer) -> None:
        grad = layer.weight.grad
        if grad is None:
            return
        if self.schedule.due(self.step + 1):
            self._dense_grads[layer.name] = np.array(to_numpy(grad), copy=True)
        grad.mul_(layer.mask)

    def on_after_step(self, layer: Layer) -> None:
        dense_grad = self._dense_grads.pop(layer.name, None)
        if not self.schedule.due(self.step):
            return
        if dense_grad is None:
            # The layer took no part in this step's loss (e.g. a BERT pooler when only the hidden states
            # are used): growth has nothing to rank by, so its mask stays as it is (see pattern/report).
            self._no_grad[layer.name] = self._no_grad.get(layer.name, 0) + 1
            return
        state: SRigLState = layer.state["srigl"]
        result = state.update(self.weight_numpy(layer), dense_grad, self.step, self.schedule)
        if result is None:
            return
        self.set_mask(layer, result.mask)
        grown = to_mask(result.grown, layer.weight).bool()
        layer.weight.masked_fill_(layer.mask == 0, 0.0)  # dropped weights become exact zeros (even inf ones)
        layer.weight.masked_fill_(grown, 0.0)  # new connections start at zero (RigL)
        if self.optimizer is not None:
            keep = layer.mask.bool() & ~grown
            for value in self.optimizer.state.get(layer.weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape:
                    value.mul_(keep.to(value.dtype))

    def pattern(self, layer: Layer) -> str:
        state: SRigLState = layer.state["srigl"]
        fan_in = int(np.prod(layer.shape[1:]))
        n_active = int(state.active.sum())
        rows = "" if n_active == layer.shape[0] else f", {n_active}/{layer.shape[0]} rows"
        missed = self._no_grad.get(layer.name, 0)
        note = f", {missed} update(s) skipped: no gradient (not in the loss)" if missed else ""
        return f"fan-in {state.k}/{fan_in}{rows}{note}"

    def is_valid(self, layer: Layer) -> bool:
        state: SRigLState = layer.state["srigl"]
        mask = to_numpy(layer.mask) != 0
        return bool(state.is_valid() and np.array_equal(mask, state.mask) and is_constant_fanin(mask, state.k))

    def layer_state_dict(self, layer: Layer) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in layer.state["srigl"].state_dict().items():
            out[key] = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        return out

    def load_layer_state_dict(self, layer: Layer, state: dict[str, Any]) -> None:
        plain = {k: to_numpy(v) if isinstance(v, torch.Tensor) else v for k, v in state.items()}
        restored = SRigLState.from_state_dict(plain)
        if restored.mask.shape != layer.shape:
            raise ValueError(f"saved SRigL mask for {layer.name!r} has shape {restored.mask.shape}, not {layer.shape}")
        layer.state["srigl"] = restored
        self.set_mask(layer, restored.mask)

    # ------------------------------------------------------------------ extras

    def history(self) -> dict[str, list[dict[str, Any]]]:
        """Per layer, one record per mask update: step, drop fraction, dropped, grown, active rows, k."""
        return {name: list(layer.state["srigl"].history) for name, layer in self.layers.items()}

    def condensed(self) -> dict[str, CondensedMatrix]:
        """The current masked weights of the Linear layers in condensed form (numpy)."""
        out = {}
        for name, layer in self.layers.items():
            if isinstance(layer.module, nn.Linear):
                state: SRigLState = layer.state["srigl"]
                out[name] = condense(to_numpy(layer.weight), state.mask)
        return out


class CondensedLinear(nn.Module):
    """A constant fan-in ``nn.Linear`` stored condensed: per active row ``k`` values and ``k`` indices.

    ``y[..., rows[i]] = sum_j values[i, j] * x[..., indices[i, j]] + bias``; ablated rows give the
    bias. Build it with :meth:`from_linear` (or :meth:`from_condensed`).

    Parameters
    ----------
    values : torch.Tensor, shape (n_active, k)
        Kept weights (a trainable ``nn.Parameter``).
    indices : torch.Tensor of int32, shape (n_active, k)
        Their input columns, increasing within a row.
    rows : torch.Tensor of int64, shape (n_active,)
        Output row of each condensed row.
    out_features, in_features : int
    bias : torch.Tensor, shape (out_features,), optional
    backend : {"auto", "numba", "torch"}, default "auto"
        ``"numba"``: the compiled gather-dot kernel on zero-copy views (CPU float32/float64, no
        autograd). ``"torch"``: ``index_select`` + multiply + sum (any device, differentiable;
        batches above 4 scatter the values into a dense weight and call ``F.linear`` instead).
        ``"auto"``: numba on CPU when no gradient is needed, torch otherwise.

    Notes
    -----
    Memory is ``n_active * k * (4 + itemsize)`` bytes instead of ``out * in * itemsize``. See
    ``bench/results/condensed.md`` for batch-1 CPU timings against dense ``F.linear`` and torch CSR.

    References
    ----------
    Lasby et al., "Dynamic Sparse Training with Structured Sparsity", ICLR 2024 (condensed layer).
    """

    def __init__(
        self,
        values: torch.Tensor,
        indices: torch.Tensor,
        rows: torch.Tensor,
        out_features: int,
        in_features: int,
        bias: torch.Tensor | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {backend!r}")
        # validate once through the numpy format (shapes, ranges, sorted indices, NaN)
        CondensedMatrix(to_numpy(values), to_numpy(indices), to_numpy(rows), (int(out_features), int(in_features)))
        self.out_features, self.in_features = int(out_features), int(in_features)
        self.backend = backend
        self.values = nn.Parameter(values.detach().clone())
        self.register_buffer("indices", indices.detach().to(torch.int32).contiguous())
        self.register_buffer("rows", rows.detach().to(device=values.device, dtype=torch.int64).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self._host_key: tuple[Any, ...] | None = None
        self._host: tuple[Any, ...] = ()

    @classmethod
    def from_condensed(
        cls, condensed: CondensedMatrix, bias: Any = None, *, backend: str = "auto", device: Any = None
    ) -> CondensedLinear:
        """From a numpy :class:`~nmsolve.CondensedMatrix` (and an optional bias)."""
        b = None if bias is None else torch.as_tensor(np.asarray(bias), device=device)
        return cls(
            torch.from_numpy(condensed.values).to(device),
            torch.from_numpy(condensed.indices).to(device),
            torch.from_numpy(condensed.rows).to(device),
            *condensed.shape,
            bias=b,
            backend=backend,
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Any = None, *, backend: str = "auto") -> CondensedLinear:
        """Condense a constant fan-in ``nn.Linear`` (masked by ``mask``, its parametrization, or its zeros).

        With a mask parametrization still attached, its mask is used; after ``bake`` the zeros of the
        weight define the mask (pass ``mask`` to keep explicit zero weights).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        from nmsolve.torch.adapter import mask_parametrization

        weight = linear.weight.detach()
        if mask is None:
            p = mask_parametrization(linear)
            mask = None if p is None else to_numpy(p.mask) != 0
        elif isinstance(mask, torch.Tensor):
            mask = to_numpy(mask) != 0
        c = condense(to_numpy(weight), mask)
        device, dtype = weight.device, weight.dtype
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(
            torch.from_numpy(c.values).to(device=device, dtype=dtype),
            torch.from_numpy(c.indices).to(device),
            torch.from_numpy(c.rows).to(device),
            *c.shape,
            bias=bias,
            backend=backend,
        )

    @property
    def k(self) -> int:
        """Inputs per active row."""
        return int(self.values.shape[1])

    def to_dense_weight(self) -> torch.Tensor:
        """The dense ``(out_features, in_features)`` weight (zeros outside the kept entries)."""
        w = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype, device=self.values.device)
        if self.values.numel():
            w[self.rows[:, None], self.indices.long()] = self.values.detach()
        return w

    def _host_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Zero-copy numpy views of values, indices, rows and bias, cached while the tensors are unchanged.

        ``load_state_dict``, ``.to()`` and in-place updates all change the values' storage or version.
        """
        values, bias, indices = self.values, self.bias, self.indices
        key = (values.data_ptr(), values._version, indices.data_ptr(), indices._version)
        if bias is not None:
            key += (bias.data_ptr(), bias._version)
        if self._host_key != key:
            tensors = (values, indices, self.rows, bias)
            self._host = tuple(None if t is None else t.detach().numpy() for t in tensors)
            self._host_key = key
        return self._host  # type: ignore[return-value]

    def _use_numba(self, x: torch.Tensor) -> bool:
        if self.backend == "torch":
            return False
        values = self.values
        cpu_ok = x.is_cpu and values.is_cpu and x.dtype == values.dtype and x.dtype in _HOST_DTYPES
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or values.requires_grad or (self.bias is not None and self.bias.requires_grad)
        )
        if self.backend == "numba":
            if not cpu_ok or needs_grad:
                raise RuntimeError(
                    "backend='numba' runs on CPU float32/float64 inputs of the values' dtype without autograd; "
                    "use torch.no_grad() / torch.inference_mode(), or backend='torch'"
                )
            return True
        return cpu_ok and not needs_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, expected {self.in_features}")
        lead = x.shape[:-1]
        if self._use_numba(x):
            values, indices, rows, bias = self._host_arrays()
            xs = np.ascontiguousarray(x.detach().numpy().reshape(-1, self.in_features))
            y = linear_unchecked(values, indices, rows, self.out_features, xs)
            if bias is not None:
                np.add(y, bias, out=y)
            return torch.from_numpy(y.reshape(*lead, self.out_features))
        xs = x.reshape(-1, self.in_features)
        if xs.shape[0] > _GATHER_MAX_BATCH:
            # the gathered (batch, n_active, k) tensor would outgrow a dense GEMM: scatter the values
            # into the dense weight (differentiable) and let BLAS / cuBLAS do the product
            y = nn.functional.linear(xs, self._scatter_dense(), self.bias)
            return y.reshape(*lead, self.out_features)
        gathered = xs.index_select(1, self.indices.reshape(-1)).reshape(xs.shape[0], *self.values.shape)
        part = (gathered * self.values).sum(-1)
        if part.shape[1] == self.out_features:
            y = part
        else:
            y = xs.new_zeros(xs.shape[0], self.out_features).index_copy(1, self.rows, part)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def _scatter_dense(self) -> torch.Tensor:
        """The dense weight as a differentiable function of ``values``."""
        flat = self.rows[:, None] * self.in_features + self.indices.long()
        dense = self.values.new_zeros(self.out_features * self.in_features)
        return dense.index_put((flat.reshape(-1),), self.values.reshape(-1)).reshape(
            self.out_features, self.in_features
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}, "
            f"active_rows={self.values.shape[0]}, bias={self.bias is not None}, backend={self.backend!r}"
        )


def _mask_of(mask: Any, linear: nn.Linear, name: str) -> np.ndarray:
    """``masks[name]`` of :func:`condense_model` as a boolean array in the weight's shape."""
    from nmsolve._validate import as_array

    arr = to_numpy(mask) if isinstance(mask, torch.Tensor) else as_array(mask, f"masks[{name!r}]")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"masks[{name!r}] must be a boolean or numeric mask, got {mask!r:.80} of dtype {arr.dtype}")
    if arr.shape != tuple(linear.weight.shape):
        raise ValueError(
            f"masks[{name!r}] has shape {arr.shape}, but layer {name!r} has weight shape {tuple(linear.weight.shape)}"
        )
    return arr != 0


def condense_model(
    model: nn.Module, masks: Mapping[str, Any] | None = None, *, include: str | Sequence[str] | None = None
) -> dict[str, str]:
    """Replace the constant fan-in ``nn.Linear`` layers of a baked ``model`` by :class:`CondensedLinear`.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    masks : mapping of layer name to mask, optional
        E.g. the dict returned by ``SRigL.bake()``; layers listed here are condensed with their
        mask (which keeps weights that happen to be exactly zero). Other Linear layers are condensed
        from their nonzeros when those are constant fan-in and sparse.
    include : str or sequence of str, optional
        Glob patterns on qualified module names; default all.

    Returns
    -------
    dict of str to str
        Per Linear considered: ``"condensed"`` or why it was kept.
    """
    import fnmatch

    from nmsolve.torch.adapter import _patterns, check_model, mask_parametrization

    check_model(model)
    if masks is not None and not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of layer names to masks (e.g. SRigL.bake()), got {masks!r}")
    masks = dict(masks or {})
    patterns = _patterns(include, "include") or ("*",)
    outcome: dict[str, str] = {}
    condensed: list[tuple[nn.Module, str, CondensedLinear]] = []  # every layer is condensed before any is replaced
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not isinstance(child, nn.Linear) or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            keep = _mask_of(masks[name], child, name) if name in masks else to_numpy(child.weight) != 0
            if mask_parametrization(child) is not None:
                outcome[name] = "still parametrized: bake the model first"
            elif keep.all():
                outcome[name] = "dense"
            elif not is_constant_fanin(keep):
                outcome[name] = "not constant fan-in"
            else:
                condensed.append((parent, child_name, CondensedLinear.from_linear(child, keep)))
                outcome[name] = "condensed"
    for parent, child_name, layer in condensed:
        setattr(parent, child_name, layer)
    return outcome
