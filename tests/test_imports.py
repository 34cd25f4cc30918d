"""Import hygiene: `netinfer aracne` on a text matrix loads only what its run needs.

Imports are most of a small run's memory (pandas with pyarrow about 85 MB, scipy.stats 73 MB,
anndata 37 MB) and of its start-up time, so the command path imports them lazily. Each check
runs in a fresh interpreter and reads ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NEVER = ("anndata", "scipy.stats", "torch", "sklearn", "h5py", "distributed", "statsmodels", "zarr")

RUN = """
import json, sys
import cli.netinfer

heavy = {heavy!r}
loaded = lambda: sorted(m for m in heavy if m in sys.modules)
print("AFTER_IMPORT", json.dumps(loaded()))
import netinfer.aracne  # what the command imports first

aracne_module = sys.modules["netinfer.aracne"]
final_edges = aracne_module._final_edges

def spy(*args, **kwargs):  # the resamples are done; the result table comes next
    print("BEFORE_TABLE", json.dumps(loaded()))
    return final_edges(*args, **kwargs)

aracne_module._final_edges = spy
code = cli.netinfer.main({argv!r})
print("AFTER_RUN", json.dumps(loaded()))
sys.exit(code)
"""


def _loaded_modules(argv: list[str], cache: Path) -> dict[str, list[str]]:
    heavy = (*NEVER, "pandas", "pyarrow", "scipy.optimize", "tqdm")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NETINFER_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", RUN.format(heavy=heavy, argv=argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {
        line.split()[0]: json.loads(line.split(maxsplit=1)[1])
        for line in proc.stdout.splitlines()
        if line.split()[:1] and line.split()[0] in ("AFTER_IMPORT", "BEFORE_TABLE", "AFTER_RUN")
    }


def test_aracne_command_imports_only_what_it_needs(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.lognormal(size=(30, 40))  # genes x samples
    X[1] += 2 * X[0]
    tsv, tfs = tmp_path / "expr.tsv", tmp_path / "tfs.txt"
    lines = ["gene\t" + "\t".join(f"S{j}" for j in range(40))]
    lines += [f"G{i}\t" + "\t".join(f"{v:.5g}" for v in row) for i, row in enumerate(X)]
    tsv.write_text("\n".join(lines) + "\n")
    tfs.write_text("G0\nG1\nG2\n")
    argv = ["aracne", str(tsv), "--regulators", str(tfs), "--output", str(tmp_path / "net.txt")]
    argv += ["--resamples", "3", "--null-pairs", "200000", "--quiet"]
    cache = tmp_path / "null-cache"

    cold = _loaded_modules(argv, cache)  # simulates and fits the null
    assert cold["AFTER_IMPORT"] == []
    assert cold["BEFORE_TABLE"] == ["scipy.optimize"]  # the fit, on a cold cache only
    assert "pandas" in cold["AFTER_RUN"] and not set(NEVER) & set(cold["AFTER_RUN"])

    warm = _loaded_modules(argv, cache)  # the fitted null comes from the disk cache
    assert warm["BEFORE_TABLE"] == []
    assert not set(NEVER) & set(warm["AFTER_RUN"]) and "scipy.optimize" not in warm["AFTER_RUN"]
    assert (tmp_path / "net.txt").read_text().startswith("Regulator\tTarget")
