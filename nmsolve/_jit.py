"""The one place where numba options live.

Every compiled kernel in nmsolve is declared with :func:`kernel`, so the policy below applies to all
of them:

* compilation is lazy (no signatures, nothing compiled at import);
* ``fastmath`` is off, because masks are decided by comparisons and must treat ``inf`` and ties
  exactly;
* the on-disk cache is on unless ``NMSOLVE_NUMBA_CACHE=0`` is set in the environment. It lives in
  ``__pycache__`` beside the sources; where the package directory is read-only numba uses the user's
  cache directory (``~/.cache/numba``, or ``NUMBA_CACHE_DIR``), and where that is not writable either,
  :func:`_ensure_cache_dir` points numba at a per-user folder of the temporary directory, so that no
  process compiles everything anew just because the install is read-only;
* ``NUMBA_DISABLE_JIT=1`` runs every kernel as plain Python, which the test suite uses to prove the
  kernels' logic independently of the compiler;
* LLVM vectorises with 256-bit registers even where the CPU has 512-bit ones (its tuning for Intel
  cores); a kernel that gains from 512-bit vectors calls :func:`prefer_512_bit_vectors` first.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import types as types_module
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import numba
from numba.core import types
from numba.extending import intrinsic

F = TypeVar("F", bound=Callable[..., Any])

CACHE = os.environ.get("NMSOLVE_NUMBA_CACHE", "1") != "0"


def _writable(folder: str) -> bool:
    """Whether files can be created in ``folder`` (made if missing); tried, not read from mode bits."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _ensure_cache_dir() -> None:
    """Give numba a writable cache folder where neither the package nor the user cache is writable."""
    if not CACHE or numba.config.CACHE_DIR:  # type: ignore[attr-defined]
        return
    from numba.misc.appdirs import AppDirs

    package = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    if _writable(package) or _writable(AppDirs(appname="numba", appauthor=False).user_cache_dir):
        return  # numba's own locators find these
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    numba.config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"nmsolve-numba-cache-{user}")  # type: ignore[attr-defined]


_ensure_cache_dir()

prange = numba.prange

# Modules whose private ``_warmup()`` compiles their hot kernels; ``warmup()`` visits them in order.
WARMUP_MODULES: tuple[str, ...] = (
    "nmsolve.nm",
    "nmsolve.combination",
    "nmsolve.fanin._product",
    "nmsolve.fanin.rigl",
    "nmsolve.training.srste",
    "nmsolve.training.lbc",
    "nmsolve.training._fused",
    "nmsolve.transposable",
    "nmsolve.permutation.bimask",
    "nmsolve.permutation.channel",
    "nmsolve.oneshot.sparsegpt",
    "nmsolve.oneshot.refine",
)


def kernel(*, parallel: bool = False, inline: bool = False) -> Callable[[F], F]:
    """Decorate a numba kernel with the project-wide policy (see module docstring).

    ``inline=True`` inlines the kernel into its compiled callers (numba ``inline="always"``): for
    small helpers called in a hot loop, where a call would stop LLVM from vectorising the loop.
    """

    def wrap(fn: F) -> F:
        when: Literal["always", "never"] = "always" if inline else "never"
        return numba.njit(cache=CACHE, fastmath=False, nogil=True, parallel=parallel, inline=when)(fn)  # type: ignore[return-value]

    return wrap


# Every kernel made by specialise(), so that tests can check them like the module-level ones.
SPECIALISED: list[Any] = []


def specialise(template: Callable[..., Any], name: str, *, parallel: bool = False, **bindings: Any) -> Any:
    """Compile ``template``'s code as a new kernel ``name`` in which the globals ``bindings`` are rebound.

    One source serves several kernels that differ only in a helper they call (say, the selection
    network of one N:M pattern), and a call compiles only the helpers it needs, not every branch a
    single kernel would hold. ``template`` is a plain function of the calling module, read once its
    module has finished loading (call this lazily). ``name`` must be unique in that module: numba's
    on-disk cache keys compiled code by module, qualified name and first line, so distinct names
    keep the specialisations apart.
    """
    namespace = {**template.__globals__, **bindings}
    fn = types_module.FunctionType(template.__code__, namespace, name, template.__defaults__, template.__closure__)
    fn.__qualname__ = name
    fn.__module__ = template.__module__
    fn.__doc__ = template.__doc__
    compiled = kernel(parallel=parallel)(fn)
    SPECIALISED.append(compiled)
    return compiled


def _prefer_512_bit_vectors_python() -> None:
    """Pure-Python runs (NUMBA_DISABLE_JIT): vector width is a compiler matter, so nothing to do."""


@intrinsic
def _prefer_512_bit_vectors_jit(typingctx):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        # llvmlite's attribute set accepts only a fixed list of names, not LLVM's string attributes;
        # adding through set.add writes them into the function's IR as given
        set.add(builder.function.attributes, "noinline")
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.void(), codegen


# Called first in a kernel's body (``prefer_512_bit_vectors()``), it marks that kernel
# "prefer-vector-width"="512", so LLVM vectorises it with 512-bit registers where the CPU has them,
# and noinline (inlined into a caller, the caller's 256-bit preference would apply again). On CPUs
# without 512-bit vectors it changes nothing; results never depend on it, only the speed does.
prefer_512_bit_vectors = (
    _prefer_512_bit_vectors_python if numba.config.DISABLE_JIT else _prefer_512_bit_vectors_jit  # type: ignore[attr-defined]
)


# Below these amounts of work a family's parallel kernels run on one thread (see threads_for).
NM_PARALLEL_MIN = 1 << 16  # nm_mask: entries
TRANSPOSABLE_PARALLEL_MIN = 1 << 17  # transposable solvers: entries
FANIN_PARALLEL_MIN = 1 << 16  # constant fan-in selection: entries; condensed products: values x batch
BIMASK_PARALLEL_MIN = 1 << 22  # Bi-Mask: mask entries x m, or candidates x bit words x n
TRAINING_PARALLEL_MIN = 1 << 18  # fused per-step training kernels: entries
ONESHOT_PARALLEL_MIN = 1 << 16  # refine_mask: rows x kept x dropped; SparseGPT sweep: entries
COMBINATION_PARALLEL_MIN = 1 << 18  # combination_scores: sums x terms


@contextlib.contextmanager
def threads_for(work: int, minimum: int) -> Iterator[None]:
    """Run the enclosed parallel kernels on one thread when ``work < minimum``.

    Waking numba's thread pool costs milliseconds on a busy machine, more than small calls gain from
    it. Results never depend on the thread count, only the speed does.
    """
    if work >= minimum:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def warmup() -> None:
    """Compile the hot kernels on tiny inputs, so the first real call is not slowed by compilation.

    Compiled code is cached on disk (unless ``NMSOLVE_NUMBA_CACHE=0``), so after the first run in a
    fresh installation this takes well under a second.

    Examples
    --------
    >>> import nmsolve
    >>> nmsolve.warmup()
    """
    for name in WARMUP_MODULES:
        importlib.import_module(name)._warmup()
