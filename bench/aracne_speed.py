"""Speed and memory of ``netinfer.aracne.aracne`` on synthetic networks, per MI estimator.

What is measured
----------------
For each case (genes x samples x regulators: 1000x300x100 and 5000x500x300) and each
estimator (``apmi``, the default, and ``gcmi``) the synthetic network of
``bench/simulate.py`` is inferred with
``aracne(X, genes, regulators, estimator=..., resamples=10, threads=2, progress=False)``
(other arguments default). Each (case, estimator) runs in a fresh Python subprocess, so that

* the Numba JIT is compiled there first, on tiny data, and that time is reported
  separately (``JIT s``; near zero when Numba's on-disk cache is warm);
* ``wall s`` is the wall time of the real call only (data already in memory);
* ``peak MB`` is the peak resident memory of that process (max of
  ``getrusage(RUSAGE_SELF).ru_maxrss`` and a 20 ms psutil poll of the process and its
  children), i.e. interpreter + imports + data + the run; ``run MB`` is the part added
  by the real call (peak minus the resident size just before it). 1 MB = 10^6 bytes.

``MI pairs/s/core`` = regulators x (genes - 1) x resamples (+ ``summary['null_pairs']``
if the implementation reports it) / wall / threads. Precision and recall are computed
against the simulated truth with the rule in ``bench/simulate.py`` (edges between two
regulators are scored undirected).

The ARACNe-AP and ARACNe3 reference figures are hard-coded below. They were measured on
2 cores on *their* synthetic data of the same sizes, not on ours, so only the time and
memory ratios are meaningful; their edge counts and precision/recall are shown for
context only. A second table sets the two estimators side by side on the same data.

Whole command, as a user runs it
--------------------------------
``--commands`` also times ``netinfer aracne EXPR.tsv --regulators TFS --output NET`` (10
resamples, 2 threads) as a separate process on the same data written as an ARACNe-style TSV:
``wall s`` is the whole process (interpreter start, imports, reading the TSV, the run, writing the
network), ``call s`` the in-process ``aracne`` call it reports, ``peak MB`` its maximum resident
memory (``wait4``). The first run has empty Numba and null caches (``NUMBA_CACHE_DIR`` and
``NETINFER_CACHE_DIR`` point at fresh folders: a fresh install); later runs reuse them.
ARACNe3 runs on the same TSV in the same benchmark when ``$ARACNE3_BIN`` names its executable
(``-x 10 --threads 2``, a cold null cache first, then warm), interleaved with netinfer's runs
(netinfer apmi, ARACNe3, netinfer gcmi, in rounds; ``--later-runs`` rounds after the first), each
row with the load average before it; otherwise its figure recorded in the reference notes is
printed and marked *recorded*. ARACNe-AP's
figure is always the recorded one. Building ARACNe3 (github.com/califano-lab/ARACNe3) without its
git submodules: ``apt-get install -y cmake libboost-dev``; in ``CMakeLists.txt`` replace
``add_subdirectory(deps/boost EXCLUDE_FROM_ALL)`` by ``add_library(Boost::math INTERFACE
IMPORTED)`` (it only needs Boost.Math's headers); ``cmake -S . -B build
-DCMAKE_BUILD_TYPE=Release && cmake --build build``; then
``ARACNE3_BIN=build/src/app/ARACNe3_app_release``. ARACNe3 keeps its null cache in
``.ARACNe3_cached/`` under its working directory, here the ``--workdir``.

Usage::

    python bench/aracne_speed.py [--quick] [--estimators apmi gcmi] [--commands] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from simulate import (  # noqa: E402
    SCORING_RULE,
    edge_keys,
    markdown_table,
    precision_recall,
    synthetic_grn,
    truth_keys,
)

CASES: dict[str, tuple[int, int, int]] = {
    "1000x300x100": (1000, 300, 100),
    "5000x500x300": (5000, 500, 300),
}
"""Case name -> (genes, samples, regulators)."""

RESAMPLES = 10
THREADS = 2
ESTIMATORS = ("apmi", "gcmi")

REFERENCE_SOURCE = "measured on 2 cores, from the project's reference notes"
REFERENCE: dict[str, dict[str, dict[str, float]]] = {
    # measured on 2 cores, from the project's reference notes -- on THEIR synthetic data
    "1000x300x100": {
        "ARACNe-AP": dict(seconds=87.0, peak_mb=2800.0, edges=1252, precision=0.985, recall=0.699),
        "ARACNe3": dict(seconds=7.1, peak_mb=16.0, edges=1352, precision=0.976, recall=0.748),
    },
    "5000x500x300": {
        "ARACNe-AP": dict(seconds=334.0, peak_mb=2100.0, edges=7356, precision=0.985, recall=0.772),
        "ARACNe3": dict(seconds=72.6, peak_mb=109.0, edges=8508, precision=0.914, recall=0.829),
    },
}
"""Reference timings of the Java (ARACNe-AP) and C++ (ARACNe3) implementations."""

ARACNE3_ENV = "ARACNE3_BIN"
"""Environment variable naming an ARACNe3 executable built from its public source."""

TARGETS: dict[tuple[str, str], dict[str, float]] = {
    ("5000x500x300", "apmi"): dict(seconds=25.0, peak_mb=500.0),
    ("5000x500x300", "gcmi"): dict(seconds=3.0),
}
"""Pass/fail targets for this implementation, by (case, estimator)."""


def load_impl(spec: str):
    """Import the function to benchmark from ``"module:function"``.

    Parameters
    ----------
    spec : str
        E.g. ``"netinfer.aracne:aracne"``.

    Returns
    -------
    callable
    """
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "aracne")


def _rss_tree_mb() -> float:
    """Resident memory (MB) of this process plus its children, 0 if psutil is missing."""
    try:
        import psutil
    except ImportError:
        return 0.0
    proc = psutil.Process()
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


class PeakSampler:
    """Poll the resident memory of this process tree in a background thread.

    Parameters
    ----------
    interval : float
        Seconds between polls.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _rss_tree_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_tree_mb())


def _maxrss_mb() -> float:
    """Peak resident memory of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def run_case(case: str, impl: str, estimator: str, resamples: int, threads: int) -> dict:
    """Run one case in this process and return its measurements (child side).

    Parameters
    ----------
    case : str
        Key of :data:`CASES`.
    impl : str
        ``"module:function"`` to benchmark.
    estimator : str
        The MI estimator, passed to the function.
    resamples, threads : int
        Passed to the function.

    Returns
    -------
    dict
        JSON-serialisable measurements.
    """
    n_genes, n_samples, n_regs = CASES[case]
    t0 = time.perf_counter()
    aracne = load_impl(impl)
    import_s = time.perf_counter() - t0

    X, genes, regulators, truth = synthetic_grn(n_genes, n_samples, n_regs, seed=0)
    Xw, gw, rw, _ = synthetic_grn(60, 40, 6, seed=1, cache=False)
    options = dict(estimator=estimator, threads=threads, progress=False)
    t0 = time.perf_counter()
    aracne(Xw, gw, rw, resamples=2, **options)
    jit_s = time.perf_counter() - t0

    rss_before = _rss_tree_mb()
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        res = aracne(X, genes, regulators, resamples=resamples, **options)
        wall = time.perf_counter() - t0
    peak = max(_maxrss_mb(), sampler.peak_mb)

    summary = dict(res.summary)
    steps = {k: summary[k] for k in ("null_seconds", "resamples_seconds", "final_seconds")}
    pairs = n_regs * (n_genes - 1) * max(resamples, 1) + int(summary.get("null_pairs", 0) or 0)
    pr = precision_recall(edge_keys(res.edges, regulators), truth_keys(truth, regulators))
    pr["scored_edges"] = pr.pop("edges")
    return dict(
        case=case,
        estimator=estimator,
        wall_s=wall,
        jit_s=jit_s,
        import_s=import_s,
        peak_mb=peak,
        run_mb=max(0.0, peak - rss_before) if rss_before else float("nan"),
        edges=int(len(res.edges)),
        pairs=pairs,
        pairs_per_s_core=pairs / wall / threads,
        null_pairs_counted="null_pairs" in summary,
        steps=steps,
        **pr,
        summary={k: v for k, v in summary.items() if isinstance(v, int | float | str)},
    )


def spawn_case(
    case: str, impl: str, estimator: str, resamples: int, threads: int, timeout: float
) -> dict:
    """Run :func:`run_case` in a fresh interpreter and return its result (parent side)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        case,
        "--impl",
        impl,
        "--estimators",
        estimator,
        "--resamples",
        str(resamples),
        "--threads",
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"case {case} ({estimator}) failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def write_case_files(case: str, directory: Path) -> tuple[Path, Path]:
    """The case's data as an ARACNe-style TSV (genes x samples) and a regulator list."""
    n_genes, n_samples, n_regs = CASES[case]
    tsv, tfs = directory / f"expr_{case}.tsv", directory / f"regulators_{case}.txt"
    if not tsv.exists():
        X, genes, regulators, _ = synthetic_grn(n_genes, n_samples, n_regs, seed=0)
        with open(tsv, "w") as fh:
            fh.write("\t".join(["gene", *(f"S{j}" for j in range(n_samples))]) + "\n")
            for gene, column in zip(genes, X.T, strict=True):
                fh.write(gene + "\t" + "\t".join(f"{v:.6g}" for v in column) + "\n")
        tfs.write_text("\n".join(regulators) + "\n")
    return tsv, tfs


def time_process(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Wall time and peak resident memory (MB) of one process, and its stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}):\n{out[-3000:]}")
    return dict(wall_s=wall, peak_mb=usage.ru_maxrss * 1024 / 1e6, stdout=out)


def netinfer_command(case: str, estimator: str, directory: Path, run: str) -> dict:
    """Time one ``netinfer aracne`` process on the case's TSV (caches under ``directory``)."""
    tsv, tfs = write_case_files(case, directory)
    caches = directory / f"caches-{estimator}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NUMBA_CACHE_DIR": str(caches / "numba"),
        "NETINFER_CACHE_DIR": str(caches / "null"),
    }
    cmd = [sys.executable, "-m", "cli.netinfer", "aracne", str(tsv), "--regulators", str(tfs)]
    cmd += ["--output", str(directory / f"net_{estimator}.txt"), "--estimator", estimator]
    cmd += ["--resamples", str(RESAMPLES), "--threads", str(THREADS)]
    load = os.getloadavg()[0]
    measured = time_process(cmd, env)
    call = re.search(r"time\W+([\d.]+) s", measured.pop("stdout"))
    return dict(
        case=case,
        tool=f"netinfer {estimator}",
        run=run,
        call_s=float(call.group(1)) if call else float("nan"),
        load=load,
        **measured,
    )


def aracne3_command(case: str, directory: Path, run: str) -> dict:
    """Time one ARACNe3 (``$ARACNE3_BIN``) process on the case's TSV; its null cache lives in
    ``directory/.ARACNe3_cached``."""
    tsv, tfs = write_case_files(case, directory)
    output = directory / "aracne3-out"
    shutil.rmtree(output, ignore_errors=True)
    cmd = [os.environ[ARACNE3_ENV], "-e", str(tsv), "-r", str(tfs), "-o", str(output)]
    cmd += ["-x", str(RESAMPLES), "--threads", str(THREADS), "--seed", "1"]
    load = os.getloadavg()[0]
    measured = time_process(cmd, cwd=directory)
    measured.pop("stdout")
    return dict(case=case, tool="ARACNe3", run=run, call_s=float("nan"), load=load, **measured)


def interleaved_commands(
    case: str, estimators: Sequence[str], directory: Path, later_runs: int = 2
) -> list[dict]:
    """The whole commands, interleaved so that a changing load affects every tool alike: in each
    round netinfer with each estimator and ARACNe3 (when ``$ARACNE3_BIN`` is set) after the
    first. The first round starts from empty caches (a fresh install; ARACNe3's null cache
    cold), the later rounds reuse them."""
    for estimator in estimators:
        shutil.rmtree(directory / f"caches-{estimator}", ignore_errors=True)
    # ARACNe3 keeps its null in .ARACNe3_cached/ under the working directory: start it empty
    shutil.rmtree(directory / ".ARACNe3_cached", ignore_errors=True)
    with_aracne3 = bool(os.environ.get(ARACNE3_ENV))
    rows = []
    for round_ in range(1 + later_runs):
        for k, estimator in enumerate(estimators):
            run = "first (fresh install)" if round_ == 0 else "later"
            print(f"whole command {case} ({estimator}, {run}) ...", file=sys.stderr, flush=True)
            rows.append(netinfer_command(case, estimator, directory, run))
            if with_aracne3 and k == 0:
                run = "first (cold null cache)" if round_ == 0 else "later (warm null cache)"
                print(f"ARACNe3 {case} ({run}) ...", file=sys.stderr, flush=True)
                rows.append(aracne3_command(case, directory, run))
    return rows


def command_report(rows: Sequence[dict]) -> str:
    """Whole-process table with pairs/s/core and ratios to each reference."""
    lines = [
        f"### Whole command: `netinfer aracne` vs the references, resamples={RESAMPLES}, "
        f"threads={THREADS}",
        "",
    ]
    table = []
    for r in rows:
        warm_a3 = [
            x["wall_s"]
            for x in rows
            if x["tool"] == "ARACNe3" and x["case"] == r["case"] and x["run"].startswith("later")
        ]
        if warm_a3:
            a3, a3_note = sum(warm_a3) / len(warm_a3), ""
        else:
            a3, a3_note = REFERENCE[r["case"]]["ARACNe3"]["seconds"], " (recorded)"
        ap = REFERENCE[r["case"]]["ARACNe-AP"]["seconds"]
        n_genes, _, n_regs = CASES[r["case"]]
        pairs = n_regs * (n_genes - 1) * RESAMPLES
        table.append(
            {
                "case": r["case"],
                "tool": r["tool"],
                "run": r["run"],
                "load (1 min)": f"{r['load']:.1f}",
                "wall s (process)": f"{r['wall_s']:.1f}",
                "call s (in-process)": "-" if r["call_s"] != r["call_s"] else f"{r['call_s']:.1f}",
                "peak MB": f"{r['peak_mb']:.0f}",
                "MI pairs/s/core (process)": f"{pairs / r['wall_s'] / THREADS:.3g}",
                "time / ARACNe3 warm": f"{r['wall_s'] / a3:.3f}{a3_note}",
                "time / ARACNe-AP (recorded)": f"{r['wall_s'] / ap:.3f}",
            }
        )
    lines += [markdown_table(table), ""]
    if not any(r["tool"] == "ARACNe3" for r in rows):
        lines.append(
            f"ARACNe3 not run (set ${ARACNE3_ENV}): its ratio uses the recorded figure of the "
            "reference notes, measured on another day and on its own synthetic data."
        )
    else:
        lines.append(
            "The reference time is the mean of ARACNe3's later (warm) runs of this benchmark; "
            "the runs were interleaved (netinfer, ARACNe3, netinfer, ...)."
        )
    lines.append(
        "MI pairs = regulators x (genes - 1) x resamples (the null is not counted); load is "
        "the 1-minute load average before each run."
    )
    return "\n".join(lines) + "\n"


def _ratio(ref: float, ours: float) -> str:
    """``ref / ours`` formatted as a multiplier (how many times faster / smaller we are)."""
    return f"{ref / ours:.1f}x" if ours > 0 else "n/a"


def report(results: Sequence[dict], impl: str) -> str:
    """Format results and reference comparison as markdown text."""
    head = [
        f"## ARACNe speed: `{impl}`, resamples={RESAMPLES}, threads={THREADS}",
        "",
        f"Reference figures: ARACNe-AP and ARACNe3, {REFERENCE_SOURCE}. They were measured "
        "on *their* synthetic data of the same sizes, not ours: edge counts and "
        "precision/recall are not directly comparable, only the time and memory ratios "
        "are (ratio = reference / ours, >1x means netinfer is faster / smaller).",
        f"Scoring: {SCORING_RULE}",
        "",
    ]
    rows = []
    for r in results:
        ref = REFERENCE.get(r["case"], {})
        ap, a3 = ref.get("ARACNe-AP"), ref.get("ARACNe3")
        rows.append(
            {
                "case (genes x samples x regs)": r["case"],
                "estimator": r["estimator"],
                "wall s": f"{r['wall_s']:.2f}",
                "JIT s": f"{r['jit_s']:.1f}",
                "peak MB": f"{r['peak_mb']:.0f}",
                "run MB": f"{r['run_mb']:.0f}",
                "edges": r["edges"],
                "MI pairs/s/core": f"{r['pairs_per_s_core']:.3g}",
                "P": "-" if r["precision"] != r["precision"] else f"{r['precision']:.3f}",
                "R": f"{r['recall']:.3f}",
                "time vs AP": _ratio(ap["seconds"], r["wall_s"]) if ap else "",
                "mem vs AP": _ratio(ap["peak_mb"], r["peak_mb"]) if ap else "",
                "time vs A3": _ratio(a3["seconds"], r["wall_s"]) if a3 else "",
                "mem vs A3": _ratio(a3["peak_mb"], r["peak_mb"]) if a3 else "",
            }
        )
    lines = head + [markdown_table(rows), ""]
    steps = [
        {
            "case": r["case"],
            "estimator": r["estimator"],
            "imports s": f"{r['import_s']:.1f}",
            "JIT s": f"{r['jit_s']:.1f}",
            **{k.replace("_seconds", " s"): f"{v:.2f}" for k, v in r["steps"].items()},
            "call s": f"{r['wall_s']:.2f}",
        }
        for r in results
    ]
    lines += ["Where the in-process call's time goes:", "", markdown_table(steps), ""]
    side_by_side = estimator_comparison(results)
    if side_by_side:
        lines += [
            "The estimators side by side (ratio = apmi / gcmi, >1x means GCMI is faster / "
            "smaller):",
            "",
            markdown_table(side_by_side),
            "",
        ]

    ref_rows = [
        {
            "case": case,
            "tool": tool,
            "wall s": v["seconds"],
            "peak MB": v["peak_mb"],
            "edges (their data)": v["edges"],
            "P (their data)": v["precision"],
            "R (their data)": v["recall"],
        }
        for case, tools in REFERENCE.items()
        for tool, v in tools.items()
    ]
    lines += ["Reference figures as recorded:", "", markdown_table(ref_rows), ""]

    for r in results:
        t = TARGETS.get((r["case"], r["estimator"]))
        if not t:
            continue
        checks = [
            f"wall {r['wall_s']:.2f} s < {t['seconds']:g} s: "
            f"**{'PASS' if r['wall_s'] < t['seconds'] else 'FAIL'}**"
        ]
        if "peak_mb" in t:
            checks.append(
                f"peak {r['peak_mb']:.0f} MB < {t['peak_mb']:.0f} MB: "
                f"**{'PASS' if r['peak_mb'] < t['peak_mb'] else 'FAIL'}**"
            )
        lines.append(f"- target {r['case']} ({r['estimator']}): " + "; ".join(checks))
    if any(not r["null_pairs_counted"] for r in results):
        lines.append("- MI pairs exclude null-model pairs (summary has no 'null_pairs').")
    return "\n".join(lines) + "\n"


def estimator_comparison(results: Sequence[dict]) -> list[dict]:
    """One row per case run with both estimators: their figures and the apmi / gcmi ratios."""
    by_key = {(r["case"], r["estimator"]): r for r in results}
    rows = []
    for case in dict.fromkeys(r["case"] for r in results):
        apmi, gcmi = by_key.get((case, "apmi")), by_key.get((case, "gcmi"))
        if not (apmi and gcmi):
            continue
        rows.append(
            {
                "case": case,
                "wall s apmi": f"{apmi['wall_s']:.2f}",
                "wall s gcmi": f"{gcmi['wall_s']:.2f}",
                "time ratio": _ratio(apmi["wall_s"], gcmi["wall_s"]),
                "run MB apmi": f"{apmi['run_mb']:.0f}",
                "run MB gcmi": f"{gcmi['run_mb']:.0f}",
                "edges apmi": apmi["edges"],
                "edges gcmi": gcmi["edges"],
                "P apmi": f"{apmi['precision']:.3f}",
                "P gcmi": f"{gcmi['precision']:.3f}",
                "R apmi": f"{apmi['recall']:.3f}",
                "R gcmi": f"{gcmi['recall']:.3f}",
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    global RESAMPLES, THREADS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the 1000-gene case")
    ap.add_argument("--out", type=Path, help="also append the markdown report to this file")
    ap.add_argument("--impl", default="netinfer.aracne:aracne", help="module:function to time")
    ap.add_argument("--resamples", type=int, default=RESAMPLES)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument(
        "--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS), metavar="NAME"
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    ap.add_argument(
        "--commands",
        action="store_true",
        help="also time the whole netinfer aracne command (first and later run) and ARACNe3",
    )
    ap.add_argument("--only-commands", action="store_true", help="time the whole commands only")
    ap.add_argument(
        "--later-runs", type=int, default=2, help="whole-command rounds after the first"
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / "bench-output" / "aracne_speed",
        help="data and caches",
    )
    ap.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    RESAMPLES, THREADS = args.resamples, args.threads

    if args.child:
        result = run_case(args.child, args.impl, args.estimators[0], RESAMPLES, THREADS)
        print("RESULT " + json.dumps(result))
        return

    cases = ["1000x300x100"] if args.quick else list(CASES)
    text = ""
    if not args.only_commands:
        results = []
        for case in cases:
            for estimator in args.estimators:
                print(f"running {case} ({estimator}) ...", file=sys.stderr, flush=True)
                results.append(
                    spawn_case(case, args.impl, estimator, RESAMPLES, THREADS, args.timeout)
                )
        text = report(results, args.impl)
    if args.commands or args.only_commands:
        args.workdir = args.workdir.resolve()  # ARACNe3 runs inside it
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = interleaved_commands(cases[-1], args.estimators, args.workdir, args.later_runs)
        text += "\n" + command_report(rows)
    print(text)
    if args.out:
        with args.out.open("a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
