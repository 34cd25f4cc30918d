"""The evaluations of frozen embeddings: metrics, baselines, figures, reruns, the label guard."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import numpy as np
import pytest
import zarr
from test_embed import KEY, pretrained_models, store_digest

from cli.gremln import main as gremln_main
from gremln.embed import load_model
from gremln.evaluate import (
    feature_sets,
    ignores_graphs,
    random_splits,
    refuse_label_reading_graphs,
)
from gremln.evaluate.celltype import classification_metrics, evaluate_celltype, fit_linear_probe
from gremln.evaluate.expression import evaluate_expression, r2_per_gene
from netinfer.cellspecific import cellspecific_networks
from netinfer.integrate import integrate
from netinfer.io import InputError
from netinfer.store import ROOT_KEY, GraphStore

FAST = {"max_length": 100}  # short sequences: quick forward passes
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    runs = pretrained_models(
        tmp_path_factory.mktemp("evaluate"), attentions=("diffusion", "vanilla", "adapter")
    )
    adata = ad.read_h5ad(runs["counts"])
    # a third of the cells, every type kept: quick, and still 10 classes
    keep = np.random.default_rng(2).random(adata.n_obs) < 1 / 3
    return runs, adata[keep | adata.obs[KEY].str.contains("Naive T")].copy()


def _metric_ranges(result: dict, metrics: list[str], models: list[str]) -> None:
    assert list(result["models"]) == models
    for name in models:
        for metric in metrics:
            summary = result["models"][name][metric]
            assert len(summary["values"]) == 3 and summary["std"] >= 0
            assert summary["mean"] == pytest.approx(np.mean(summary["values"]))


def test_celltype_evaluation_reports_every_model_and_reruns_identically(setup, tmp_path):
    runs, adata = setup
    args = (adata, load_model(runs["diffusion"]), runs["graphs"])
    options = dict(cell_type_key=KEY, vanilla=runs["vanilla"], n_pcs=20, progress=False)
    result = evaluate_celltype(*args, out_dir=tmp_path / "a", embed_options=FAST, **options)
    metrics = ["macro_f1", "precision", "recall", "accuracy"]
    _metric_ranges(result, metrics, ["gremln", "vanilla", "pca"])
    for scores in result["models"].values():
        assert all(0 <= v <= 1 for m in metrics for v in scores[m]["values"])
    assert result["models"]["pca"]["accuracy"]["mean"] > 0.5  # real signal reaches the probe
    assert len(result["data"]["cell_types"]) == 10
    confusion = np.asarray(result["confusion"]["gremln"])
    assert confusion.shape == (10, 10) and confusion.sum() == pytest.approx(
        3 * 0.2 * adata.n_obs, rel=0.1
    )
    written = (tmp_path / "a" / "celltype.json").read_text()
    assert json.loads(written) == result
    assert (tmp_path / "a" / "celltype_confusion.png").read_bytes()[:8] == PNG
    evaluate_celltype(*args, out_dir=tmp_path / "b", embed_options=FAST, **options)
    assert (tmp_path / "b" / "celltype.json").read_text() == written  # seeds fixed


def test_celltype_evaluation_refuses_graphs_from_labels(setup, tmp_path):
    runs, adata = setup
    with pytest.raises(ValueError, match="graph of its own label"):
        evaluate_celltype(
            adata,
            runs["diffusion"],
            runs["graphs"],
            cell_type_key=KEY,
            out_dir=tmp_path,
            graph_mode="celltype",
        )
    with pytest.raises(InputError, match="no obs column 'cluster'"):
        evaluate_celltype(
            adata, runs["diffusion"], runs["graphs"], cell_type_key="cluster", out_dir=tmp_path
        )
    # cell-specific networks read each cell's own label: their assignment is refused too
    graphs = tmp_path / "graphs.zarr"
    shutil.copytree(runs["graphs"], graphs)
    with GraphStore.open(graphs, mode="a") as store:
        cellspecific_networks(adata, store, cell_type_key=KEY, name="per_cell")
        reference = adata[: adata.n_obs // 2]
        integrate(adata[adata.n_obs // 2 :], reference, store, cell_type_key=KEY, name="knn")
    with pytest.raises(InputError, match="'per_cell' was made from its cells' own labels"):
        evaluate_celltype(
            adata,
            runs["diffusion"],
            graphs,
            cell_type_key=KEY,
            out_dir=tmp_path,
            graph_mode="assignment:per_cell",
        )
    # an integration reads its reference's labels, not those of the cells it gives graphs to
    refuse_label_reading_graphs(graphs, "assignment:knn", adata[adata.n_obs // 2 :])
    with pytest.raises(InputError, match=f"e.g. {adata.obs_names[-1]}"):
        refuse_label_reading_graphs(graphs, "assignment:per_cell", adata[-1:])


@pytest.mark.filterwarnings("ignore:.*have no training cells:UserWarning")  # all Naive T evaluated
def test_celltype_evaluation_refuses_integrations_that_read_evaluated_labels(
    setup, tmp_path, capsys
):
    """An integration whose reference held evaluated cells gives each evaluated cell a graph
    made from its neighbours' labels: refused, in the store (assignment) and in memory."""
    runs, adata = setup
    everyone = ad.read_h5ad(runs["counts"])
    outside = everyone[~everyone.obs_names.isin(adata.obs_names)]  # never evaluated here
    leaked = adata.obs_names[[3, 40, 77, 150, 201]]
    leaky = ad.concat([outside, adata[leaked]])
    graphs = tmp_path / "graphs.zarr"
    shutil.copytree(runs["graphs"], graphs)
    with GraphStore.open(graphs, mode="a") as store:
        integrate(adata, leaky, store, cell_type_key=KEY, name="leaky")
        integrate(adata, outside, store, cell_type_key=KEY, name="disjoint")
    common = dict(cell_type_key=KEY, n_splits=1, n_pcs=20, embed_options=FAST, progress=False)
    before = store_digest(graphs)
    refused = tmp_path / "refused"
    with pytest.raises(InputError) as caught:
        evaluate_celltype(
            adata,
            runs["diffusion"],
            graphs,
            out_dir=refused,
            graph_mode="assignment:leaky",
            **common,
        )
    message = str(caught.value)
    assert f"{graphs}: assignment 'leaky'" in message and "reference cells" in message
    assert f"5 of the {adata.n_obs} evaluated cells" in message and leaked[0] in message
    assert "excludes the evaluated cells" in message
    assert store_digest(graphs) == before and not refused.exists()
    # in memory: the same reference given to the evaluation's own integration
    with pytest.raises(InputError, match=f"<reference>: .* 5 of .* {leaked[0]}"):
        evaluate_celltype(
            adata, runs["diffusion"], graphs, out_dir=refused, reference=leaky, **common
        )
    assert store_digest(graphs) == before and not refused.exists()
    adata.write_h5ad(tmp_path / "data.h5ad")
    leaky.write_h5ad(tmp_path / "leaky.h5ad")
    code = gremln_main(
        ["evaluate", "celltype", str(tmp_path / "data.h5ad"), "--model", str(runs["diffusion"])]
        + ["--store", str(graphs), "--cell-type-key", KEY, "--quiet", "--out", str(refused)]
        + ["--reference", str(tmp_path / "leaky.h5ad")]
    )
    error = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'leaky.h5ad'}: the integration would read" in error
    assert store_digest(graphs) == before and not refused.exists()
    refuse_label_reading_graphs(graphs, "integrated", adata, reference=outside, cell_type_key=KEY)
    # other cells that only share ids with evaluated ones (default names of two data sets) are
    # no evaluated cells: their labels may be read
    namesakes = outside[: adata.n_obs].copy()
    namesakes.obs_names = adata.obs_names[: namesakes.n_obs]
    refuse_label_reading_graphs(graphs, "integrated", adata, reference=namesakes, cell_type_key=KEY)
    # a reference without the evaluated cells is accepted and the evaluation runs
    accepted = evaluate_celltype(
        adata,
        runs["diffusion"],
        graphs,
        out_dir=tmp_path / "ok",
        graph_mode="assignment:disjoint",
        **common,
    )
    assert accepted["params"]["graphs"] == "assignment:disjoint"
    # an integration stored before label_cells existed cannot be checked: it still evaluates
    root = zarr.open_group(graphs, mode="r+")
    old = root[f"assignments/{root.attrs[ROOT_KEY]['assignments']['leaky']}"]
    del old["label_cells"]
    old.attrs["params"] = {k: v for k, v in old.attrs["params"].items() if k != "read_labels"}
    result = evaluate_celltype(
        adata,
        runs["diffusion"],
        graphs,
        out_dir=tmp_path / "old",
        graph_mode="assignment:leaky",
        **common,
    )
    assert set(result["models"]) == {"gremln", "pca"}


def test_features_of_a_split_never_read_the_other_cells_labels(setup):
    runs, adata = setup
    train, val, test = random_splits(adata.n_obs, n_splits=1, seed=0, labels=adata.obs[KEY])[0]
    fit_rows = np.sort(np.concatenate([train, val]))
    relabelled = adata.copy()
    labels = relabelled.obs[KEY].astype(str).to_numpy()
    labels[test] = np.random.default_rng(0).permutation(labels[test])
    labels[test[:5]] = "unseen type"
    relabelled.obs[KEY] = labels
    models = {"gremln": load_model(runs["diffusion"])}
    common = dict(cell_type_key=KEY, n_pcs=20, embed_options=FAST, progress=False)
    first = feature_sets(adata, models, runs["graphs"], **common)
    second = feature_sets(relabelled, models, runs["graphs"], **common)
    for name in ("gremln", "pca"):
        np.testing.assert_array_equal(first[name](fit_rows), second[name](fit_rows))


def test_expression_evaluation(setup, tmp_path):
    runs, adata = setup
    result = evaluate_expression(
        adata,
        runs["diffusion"],
        runs["graphs"],
        vanilla=runs["vanilla"],
        graph_mode="ppi:toy_ppi",
        out_dir=tmp_path,
        n_genes=50,
        n_pcs=20,
        embed_options=FAST,
        progress=False,
    )
    _metric_ranges(result, ["r2"], ["gremln", "vanilla", "pca"])
    assert all(scores["r2"]["mean"] <= 1 for scores in result["models"].values())
    assert result["models"]["pca"]["r2"]["mean"] > 0.05  # a linear summary of expression
    assert result["params"]["target_genes"] == 50
    assert json.loads((tmp_path / "expression.json").read_text()) == result
    assert (tmp_path / "expression_predicted_vs_true.png").read_bytes()[:8] == PNG


def test_graph_integration_variants_side_by_side(setup, tmp_path):
    """``compare`` adds models by name; an adapter-only model (vanilla attention) reads the
    graphs, so the evaluations give it the cells' graphs."""
    runs, adata = setup
    common = dict(graph_mode="ppi:toy_ppi", n_genes=50, n_pcs=20, embed_options=FAST)
    result = evaluate_expression(
        adata,
        runs["diffusion"],
        runs["graphs"],
        vanilla=runs["vanilla"],
        compare={"adapter": runs["adapter"]},
        out_dir=tmp_path,
        progress=False,
        **common,
    )
    _metric_ranges(result, ["r2"], ["gremln", "vanilla", "adapter", "pca"])
    adapter = load_model(runs["adapter"])
    assert not ignores_graphs(adapter) and ignores_graphs(load_model(runs["vanilla"]))
    rows = np.arange(adata.n_obs)
    features = {
        mode: feature_sets(
            adata,
            {"adapter": adapter},
            runs["graphs"],
            graph_mode=mode,
            n_pcs=20,
            embed_options=FAST,
            progress=False,
        )["adapter"](rows)
        for mode in ("ppi:toy_ppi", "none")
    }
    # bit-identical if the adapter never saw the graph; the fusion is small after 8 steps
    assert np.abs(features["ppi:toy_ppi"] - features["none"]).max() > 1e-6
    for taken in ("vanilla", "pca", "adapter_finetuned"):
        with pytest.raises(ValueError, match=f"model name '{taken}' is taken"):
            evaluate_expression(
                adata,
                runs["diffusion"],
                runs["graphs"],
                vanilla=runs["vanilla"],
                compare={taken: runs["adapter"]},
                out_dir=tmp_path,
                **common,
            )


def test_linear_probe_stops_early_and_separates_classes():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4, size=(3, 5))
    labels = rng.integers(0, 3, 300)
    x = centres[labels] + rng.normal(size=(300, 5))
    probe = fit_linear_probe(x[:200], labels[:200], x[200:250], labels[200:250], n_classes=3)
    assert probe.best_epoch < probe.epochs < 2000  # stopped by the validation loss
    scores = classification_metrics(labels[250:], probe.predict(x[250:]))
    assert scores["macro_f1"] > 0.95 and scores["accuracy"] > 0.95
    chance = classification_metrics(labels[250:], np.zeros(50, dtype=int))
    assert chance["macro_f1"] < 0.3 and chance["precision"] < chance["recall"] + 0.2


def test_splits_are_stratified_disjoint_and_seeded():
    labels = np.repeat(["a", "b", "c"], [50, 10, 3])
    splits = random_splits(len(labels), n_splits=3, seed=4, labels=labels)
    for train, val, test in splits:
        assert len(np.concatenate([train, val, test])) == len(labels)
        assert len(np.unique(np.concatenate([train, val, test]))) == len(labels)
        assert set(labels[train]) == {"a", "b", "c"}  # every class can be learned
        assert (labels[test] == "a").sum() == 10 and (labels[test] == "b").sum() == 2
    assert not np.array_equal(splits[0][2], splits[1][2])
    again = random_splits(len(labels), n_splits=3, seed=4, labels=labels)
    assert all(np.array_equal(a, b) for s, t in zip(splits, again) for a, b in zip(s, t))


def test_r2_per_gene():
    truth = np.array([[1.0, 2.0, 5.0], [3.0, 2.0, 5.0], [5.0, 2.0, 5.0]])
    np.testing.assert_allclose(r2_per_gene(truth, truth), [1.0, 0.0, 0.0])  # constant: 0
    mean = np.tile(truth.mean(axis=0), (3, 1))
    np.testing.assert_allclose(r2_per_gene(truth, mean)[0], 0.0)


def test_cli_evaluate(setup, tmp_path, capsys):
    runs, adata = setup
    adata.write_h5ad(tmp_path / "data.h5ad")
    common = [str(tmp_path / "data.h5ad"), "--model", str(runs["diffusion"]), "--store"]
    common += [str(runs["graphs"]), "--quiet", "--max-length", "100", "--n-pcs", "20"]
    code = gremln_main(
        ["evaluate", "celltype", *common, "--cell-type-key", KEY, "--out", str(tmp_path / "ct")]
        + ["--graph-mode", "ppi:toy_ppi"]
    )
    assert code == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    assert "macro_f1" in table and "pca" in table
    code = gremln_main(
        [
            "evaluate",
            "expression",
            *common,
            "--vanilla",
            str(runs["vanilla"]),
            "--graph-mode",
            "none",
            "--out",
            str(tmp_path / "ex"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "ex" / "expression.json").read_text())
    assert list(result["models"]) == ["gremln", "vanilla", "pca"]
    code = gremln_main(
        ["evaluate", "expression", *common, "--graph-mode", "ppi:toy_ppi"]
        + ["--compare", f"adapter={runs['adapter']}", "--out", str(tmp_path / "variants")]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "variants" / "expression.json").read_text())
    assert list(result["models"]) == ["gremln", "adapter", "pca"]
    for bad, message in (("adapter", "expected NAME=RUN_DIR"), ("x=nowhere", "no such directory")):
        code = gremln_main(["evaluate", "expression", *common, "--compare", bad, "--out", "o"])
        assert code == 2 and message in capsys.readouterr().err
    code = gremln_main(
        ["evaluate", "celltype", *common, "--cell-type-key", "cluster", "--out", str(tmp_path)]
    )
    assert code == 2 and "no obs column 'cluster'" in capsys.readouterr().err
    code = gremln_main(["evaluate", "expression", *common, "--out", str(tmp_path)])
    assert (
        code == 2 and "integrated graphs need labelled reference cells" in capsys.readouterr().err
    )
