"""The cell-type network pipeline: QC, consensus, end to end, resume, Dask, bad input."""

from __future__ import annotations

import itertools
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import planted_network
from scipy import stats
from statsmodels.stats.multitest import multipletests

from netinfer import pipeline
from netinfer.distributed import prepare_client
from netinfer.io import InputError
from netinfer.pipeline import celltype_networks, consensus, quality_control
from netinfer.store import GraphStore

FAST = dict(
    min_counts=500,
    max_counts=10**6,
    trim=None,
    min_genes=10,
    min_cells=50,
    cluster_cells=80,  # the 240-cell types split into clusters of 80 cells or more
    resolution=0.5,
    resamples=10,
    seed=1,
)


def _typed_counts(n_per_type=240, seed=0, shift=1.5):
    """Two cell types sharing a planted network (type B's regulators shifted), as UMI counts."""
    blocks, labels = [], []
    for i, name in enumerate(["type A", "type B"]):
        X, genes, regulators, truth = planted_network(
            n_samples=n_per_type, n_genes=200, n_regulators=20, seed=seed
        )
        X[:, : len(regulators)] *= shift if i else 1.0
        blocks.append(X)
        labels += [name] * n_per_type
    expression = np.vstack(blocks)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(expression / expression.sum(1, keepdims=True) * 20_000)
    adata = ad.AnnData(counts.astype(np.float32), var=pd.DataFrame(index=genes))
    adata.obs["cell_type"] = pd.Categorical(labels)
    return adata, regulators, truth


def test_quality_control_reports_each_rule():
    totals = [50, 2000, 3000, 4000, 200_000, 5000, 6000, 7000, 8000, 9000]
    X = np.zeros((10, 4))
    X[:, 0] = totals
    X[:, 1] = 1
    X[3, 1:] = 0  # one expressed gene only
    adata = ad.AnnData(X)
    kept, report = quality_control(
        adata, min_counts=1000, max_counts=100_000, trim=0.8, min_genes=2
    )
    assert report == {
        "input": 10,
        "below_min_counts": 1,
        "above_max_counts": 1,
        "outside_middle_fraction": 2,
        "below_min_genes": 1,
        "kept": 5,
    }
    assert kept.n_obs == 5
    with pytest.warns(UserWarning, match="non-integer"):
        quality_control(ad.AnnData(X + 0.5), min_counts=0, min_genes=0)


def _enumerated_consensus(nets, detected, regulators):
    """Reference consensus by enumeration: every pair, every subset of the clusters testing it."""
    genes = sorted(set().union(*map(set, detected)))
    pairs = [(r, g) for r in regulators if r in genes for g in genes if g != r]
    testers = {pair: [c for c, d in enumerate(detected) if set(pair) <= set(d)] for pair in pairs}
    density = [len(net) / sum(c in t for t in testers.values()) for c, net in enumerate(nets)]
    count = {}
    for net in nets:
        for pair in zip(net["regulator"], net["target"]):
            count[pair] = count.get(pair, 0) + 1

    def at_least(k, clusters):
        total = 0.0
        for chosen in itertools.product([0, 1], repeat=len(clusters)):
            if sum(chosen) >= k:
                chances = [density[c] if x else 1 - density[c] for c, x in zip(clusters, chosen)]
                total += np.prod(chances)
        return total

    family = [pair for pair in pairs if testers[pair]]
    pvalues = [at_least(count.get(pair, 0), testers[pair]) for pair in family]
    qvalues = multipletests(pvalues, method="fdr_bh")[1]
    result = {pair: (p, q) for pair, p, q in zip(family, pvalues, qvalues) if pair in count}
    return result, family, density


def test_consensus_against_enumeration_with_per_cluster_tested_pairs():
    detected = [
        ["A", "B", "X", "Y", "Z", "W"],
        ["A", "B", "X", "Z"],  # Y and W constant in this cluster: never tested there
        ["A", "X", "Y", "W"],  # regulator B constant here
        ["A", "B", "X", "Y", "Z", "W"],
    ]
    nets = [
        pd.DataFrame({"regulator": ["A", "A", "B"], "target": ["X", "Y", "X"], "mi": [1, 2, 3.0]}),
        pd.DataFrame({"regulator": ["A", "B"], "target": ["X", "Z"], "mi": [3, 1.0]}),
        pd.DataFrame({"regulator": ["A"], "target": ["X"], "mi": [2.0]}),
        pd.DataFrame({"regulator": ["A", "B"], "target": ["X", "Z"], "mi": [2, 2.0]}),
    ]
    expected, family, density = _enumerated_consensus(nets, detected, ["A", "B", "C"])
    everything = consensus(nets, detected, ["A", "B", "C"], fdr=1.0)
    assert everything.attrs["tested_pairs"] == len(family) == 10
    assert everything.attrs["floor"] == pytest.approx(np.prod(density), rel=1e-12)
    assert everything.attrs["in_every_cluster"] == 1  # A -> X
    got = {
        (r.regulator, r.target): (r.pvalue, r.qvalue) for r in everything.itertuples(index=False)
    }
    assert got.keys() == expected.keys()
    for pair, (p, q) in expected.items():
        assert got[pair] == pytest.approx((p, q), rel=1e-12), pair
    row = everything.set_index(["regulator", "target"]).loc[("A", "X")]
    assert row["count"] == 4 and row["tested"] == 4 and row["mi"] == 2.0
    assert everything.set_index(["regulator", "target"]).loc[("B", "Z"), "tested"] == 3
    strict = consensus(nets, detected, ["A", "B", "C"], fdr=0.1)
    assert set(zip(strict["regulator"], strict["target"])) == {
        pair for pair, (_, q) in expected.items() if q <= 0.1
    }
    # clusters that test everything alike: the binomial test with one density
    same = [nets[0], nets[0].iloc[::-1], nets[0]]
    full = [detected[0]] * 3
    kept = consensus(same, full, ["A", "B"], fdr=1.0)
    assert kept["pvalue"].iloc[0] == pytest.approx(stats.binom.sf(2, 3, 3 / 10))  # 3 of 2 x 5


def test_pipeline_recovers_planted_network_and_stores_it(tmp_path):
    adata, regulators, truth = _typed_counts()
    with GraphStore.create(tmp_path / "g.zarr") as store:
        result = celltype_networks(
            adata, regulators, store=store, cell_type_key="cell_type", **FAST
        )
        listing = store.list().set_index("name")
        assert set(listing.index) == {"type A", "type B"}
        assert (listing["kind"] == "consensus").all()
        info = store.info("type A")
        assert info["cell_type"] == "type A" and info["params"]["resamples"] == 10
    consensus_types = []
    for cell_type, edges in result.networks.items():
        found = set(zip(edges["regulator"], edges["target"]))
        hits = {e for e in found if e in truth or e[::-1] in truth}
        assert len(found) >= 10 and len(hits) >= 0.9 * len(found), cell_type
        entry = result.report["cell_types"][cell_type]
        assert entry["consensus_edges"] == len(edges)
        assert all(info["cells"] >= 80 for info in entry["clusters"].values())
        assert sum(info["cells"] for info in entry["clusters"].values()) == 240
        if "note" in entry:  # a single cluster: its network is kept, and said so
            assert "one cluster" in entry["note"] and (edges["count"] == 1).all()
        else:
            assert (edges["qvalue"] <= 0.05).all() and (edges["count"] >= 2).all()
            consensus_types.append(cell_type)
    assert consensus_types  # at least one type went through the consensus test
    assert result.report["qc"]["kept"] == adata.n_obs


def test_a_consensus_that_cannot_accept_any_edge_gives_the_whole_type_network():
    # at this FDR no consensus of 2-3 clusters can reach significance, whatever the data: each
    # type's network is then ARACNe on all its cells, never an empty network by construction
    adata, regulators, truth = _typed_counts()
    result = celltype_networks(
        adata, regulators, cell_type_key="cell_type", **{**FAST, "fdr": 1e-9}
    )
    whole_types = []
    for cell_type, edges in result.networks.items():
        entry = result.report["cell_types"][cell_type]
        if len(entry["clusters"]) == 1:  # no consensus to fall back from
            assert "whole_type" not in entry and len(edges) == entry["clusters"]["0"]["edges"]
            continue
        whole_types.append(cell_type)
        assert "consensus_limit" in entry, cell_type
        assert entry["whole_type"]["profiles"] == 240 == entry["cells"]
        assert entry["consensus_edges"] == entry["whole_type"]["edges"] == len(edges) >= 10
        found = set(zip(edges["regulator"], edges["target"]))
        hits = {e for e in found if e in truth or e[::-1] in truth}
        assert len(hits) >= 0.9 * len(found), cell_type
        assert (cell_type, "whole") in result.clusters
    assert whole_types  # a type of several clusters was tested
    assert "whole type" in pipeline.format_report(result.report)


def test_pipeline_with_the_gcmi_estimator(tmp_path):
    adata, regulators, truth = _typed_counts()
    with pytest.raises(ValueError, match="estimator must be one of"):
        celltype_networks(adata, regulators, cell_type_key="cell_type", estimator="mine", **FAST)
    with GraphStore.create(tmp_path / "g.zarr") as store:
        result = celltype_networks(
            adata, regulators, store=store, cell_type_key="cell_type", estimator="gcmi", **FAST
        )
        assert store.info("type A")["params"]["estimator"] == "gcmi"
    for cell_type, edges in result.networks.items():
        found = set(zip(edges["regulator"], edges["target"]))
        hits = {e for e in found if e in truth or e[::-1] in truth}
        assert len(found) >= 10 and len(hits) >= 0.9 * len(found), cell_type


def test_resume_after_interruption_gives_the_same_result(tmp_path, monkeypatch):
    adata, regulators, _ = _typed_counts()
    reference = celltype_networks(adata, regulators, cell_type_key="cell_type", **FAST)
    calls = {"n": 0}
    original = pipeline.run_cluster_job

    def killed_after_two(job):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("Ctrl-C")
        return original(job)

    monkeypatch.setattr(pipeline, "run_cluster_job", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        celltype_networks(adata, regulators, cell_type_key="cell_type", work_dir=tmp_path, **FAST)
    assert len(list(tmp_path.glob("*[0-9a-f].tsv.gz"))) == 2  # two finished cluster networks
    assert len(list(tmp_path.glob("*.seen.tsv.gz"))) == 2  # with their recurrence evidence
    monkeypatch.setattr(pipeline, "run_cluster_job", original)
    resumed = celltype_networks(
        adata, regulators, cell_type_key="cell_type", work_dir=tmp_path, **FAST
    )
    statuses = [
        info["status"]
        for entry in resumed.report["cell_types"].values()
        for info in entry["clusters"].values()
    ]
    assert statuses.count("resumed") == 2 and statuses.count("done") >= 1
    for cell_type, edges in reference.networks.items():
        pd.testing.assert_frame_equal(resumed.networks[cell_type], edges)


def test_dask_workers_give_the_same_networks():
    adata, regulators, _ = _typed_counts()
    local = celltype_networks(adata, regulators, cell_type_key="cell_type", **FAST)
    client, close = prepare_client(workers=2, threads=1)
    try:
        remote = celltype_networks(
            adata, regulators, cell_type_key="cell_type", client=client, **FAST
        )
    finally:
        close()
    for cell_type, edges in local.networks.items():
        pd.testing.assert_frame_equal(remote.networks[cell_type], edges)


def test_bad_input_and_small_types(tmp_path):
    adata, regulators, _ = _typed_counts()
    with pytest.raises(InputError, match="no obs column 'celltype'.*cell_type"):
        celltype_networks(adata, regulators, cell_type_key="celltype", **FAST)
    with pytest.raises(InputError, match="none of the 2 regulators"):
        celltype_networks(adata, ["NOPE1", "NOPE2"], cell_type_key="cell_type", **FAST)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs.iloc[:20, 0] = "rare"
    with pytest.warns(UserWarning, match="rare"):
        result = celltype_networks(adata, regulators, cell_type_key="cell_type", **FAST)
    assert "rare" not in result.networks
    assert "fewer than min_cells" in result.report["cell_types"]["rare"]["skipped"]


def test_without_cell_types_leiden_clusters_act_as_types():
    adata, regulators, _ = _typed_counts()
    result = celltype_networks(adata, regulators, **{**FAST, "resolution": 0.1})
    assert result.networks and all(t.startswith("leiden_") for t in result.networks)


def test_metacells_pool_each_cell_with_its_nearest_neighbours_in_the_cluster():
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(3, size=(40, 6)).astype(float))
    coords = rng.normal(size=(40, 3))
    rows = np.array([0, 7, 39])
    pooled = pipeline.pool_metacells(counts, coords, rows, 4)
    for out, row in zip(pooled.toarray(), rows):
        nearest = np.argsort(np.linalg.norm(coords - coords[row], axis=1))[:5]  # itself + 4
        np.testing.assert_array_equal(out, counts[nearest].toarray().sum(axis=0))


def test_sparse_counts_and_metacells_run_end_to_end():
    adata, regulators, _ = _typed_counts()
    adata.X = sp.csr_matrix(adata.X)
    result = celltype_networks(
        adata, regulators, cell_type_key="cell_type", **{**FAST, "metacells": 5}
    )
    assert set(result.networks) == {"type A", "type B"}
    assert all(len(edges) > 0 for edges in result.networks.values())


def test_bundled_pbmc68k_counts_with_bulk_labels():
    from netinfer.datasets import human_tfs, pbmc68k_counts

    with pytest.warns(UserWarning) as caught:
        result = celltype_networks(
            pbmc68k_counts(),
            human_tfs(),
            cell_type_key="bulk_labels",
            min_counts=100,
            min_genes=50,
            trim=None,
            min_cells=30,
            resolution=0.5,
            metacells=5,
            resamples=10,
        )
    report = result.report
    assert report["qc"]["kept"] == 700 and len(report["cell_types"]) == 10
    assert "skipped" in report["cell_types"]["CD34+"]
    warned = " ".join(str(w.message) for w in caught)
    assert "CD34+ (13 cells)" in warned  # too small for a network, and said so
    sizes = {t: entry["cells"] for t, entry in report["cell_types"].items()}
    assert set(result.networks) == {t for t, n in sizes.items() if n >= 30}
    for cell_type, edges in result.networks.items():  # small networks say why
        if len(edges) < report["regulators"]:
            assert "detected genes" in report["cell_types"][cell_type]["few_edges"]
            assert f"{cell_type}: {len(edges)} edges from" in warned
    assert sum(len(edges) for edges in result.networks.values()) > 20
    monocytes = set(result.networks["CD14+ Monocyte"]["regulator"])
    assert monocytes & {"SPI1", "IRF8", "KLF6", "CEBPB", "CEBPD", "FLI1"}  # myeloid regulators


def _cli_run(tmp_path, adata, regulators, *options):
    from cli import netinfer as cli

    adata.write_h5ad(tmp_path / "counts.h5ad")
    (tmp_path / "tfs.txt").write_text("\n".join(regulators) + "\n")
    store = tmp_path / "graphs.zarr"
    args = ["celltype-networks", str(tmp_path / "counts.h5ad"), "--regulators"]
    args += [str(tmp_path / "tfs.txt"), "--store", str(store), "--cell-type-key", "cell_type"]
    args += ["--min-counts", "0", "--max-counts", "1000000000", "--trim", "1"]
    args += ["--min-genes", "0", "--resamples", "10", "--workers", "1", "--quiet", *options]
    return cli.main(args), store


def test_cli_a_type_of_120_cells_gets_a_network(tmp_path, capsys):
    adata, regulators, truth = _typed_counts(n_per_type=120)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs.iloc[:30, 0] = "rare"  # 30 cells: under --min-cells, listed with its size
    code, store = _cli_run(tmp_path, adata, regulators, "--min-cells", "50")
    assert code == 0, capsys.readouterr().err
    assert "rare (30 cells)" in capsys.readouterr().err
    with GraphStore.open(store) as reader:
        listing = reader.list().set_index("name")
    assert set(listing.index) == {"type A", "type B"} and (listing["edges"] > 0).all()
    report = json.loads((tmp_path / "graphs.zarr.report.json").read_text())
    assert report["cell_types"]["type A"]["clusters"]["0"]["cells"] == 90
    assert report["cell_types"]["type B"]["clusters"]["0"]["cells"] == 120
    assert report["too_small"] == {"rare": 30}


def test_cli_a_run_without_any_edge_fails_unless_allowed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(30)]
    counts = rng.poisson(5.0, size=(120, 30)).astype(np.float32)  # independent genes
    adata = ad.AnnData(counts, var=pd.DataFrame(index=genes))
    adata.obs["cell_type"] = "noise"
    code, store = _cli_run(tmp_path, adata, genes[:5], "--min-cells", "50")
    err = capsys.readouterr().err
    assert code == 2 and "no cell type network has an edge" in err and "--allow-empty" in err
    assert "noise: 0 edges from 120 cells" in err  # the reason: cells, genes, signal
    assert not store.exists()  # the store made for the failed run is removed: nothing stored
    code, store = _cli_run(tmp_path, adata, genes[:5], "--min-cells", "50", "--allow-empty")
    assert code == 0
    with GraphStore.open(store) as reader:
        listing = reader.list().set_index("name")
    assert listing.loc["noise", "edges"] == 0  # stored, empty, and the report says why
    report = json.loads((tmp_path / "graphs.zarr.report.json").read_text())
    assert "weak signal" in report["cell_types"]["noise"]["few_edges"]


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from cli import netinfer as cli

    parser = cli._parser()
    args = parser.parse_args(["celltype-networks", "c.h5ad", "--regulators", "r", "--store", "s"])
    defaults = inspect.signature(celltype_networks).parameters
    for name in ("cluster_cells", "max_cells", "min_cells", "resamples", "fdr", "resolution"):
        assert getattr(args, name) == defaults[name].default, name


def test_small_clusters_merge_into_the_nearest_until_all_are_large_enough():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0], [10, 0], [0, 10], [10.5, 1], [30, 30]])
    sizes = [40, 35, 30, 5, 8]
    coords = np.vstack([c + rng.normal(scale=0.3, size=(n, 2)) for c, n in zip(centres, sizes)])
    labels = np.repeat(["a", "b", "c", "d", "e"], sizes)
    merged = pipeline.merge_small_clusters(labels, coords, min_size=20)
    groups = {tuple(np.flatnonzero(merged == m)) for m in set(merged)}
    cells = {name: np.flatnonzero(labels == name) for name in "abcde"}

    def union(*names):
        return tuple(np.sort(np.concatenate([cells[n] for n in names])))

    # smallest first: d (5) joins b, its nearest centroid; then e (8) joins the nearest of the
    # centroids left, b + d (distances to a, b + d, c: 42.4, 35.9, 36.1)
    assert groups == {union("a"), union("b", "d", "e"), union("c")}
    assert merged[cells["b"][0]] == "0"  # numbered by decreasing size
    assert all(np.sum(merged == m) >= 20 for m in set(merged))
    assert set(pipeline.merge_small_clusters(labels, coords, min_size=200)) == {"0"}
