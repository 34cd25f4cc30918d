"""Reverse perturbation prediction (frozen, fine-tuned, lasso), its label guard, the CLI, and
``evaluate all`` with its summary table."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from test_embed import KEY, pretrained_models

from cli.gremln import main as gremln_main
from gremln.embed import load_model
from gremln.evaluate import feature_sets, random_splits
from gremln.evaluate.all import evaluate_all
from gremln.evaluate.edges import hold_out_edges
from gremln.evaluate.perturbation import (
    evaluate_perturbation,
    finetuned_classifier,
    perturbed_cells,
    without_perturbed_genes,
)
from netinfer.io import InputError

FAST = {"max_length": 100}  # short sequences: quick forward passes
PNG = b"\x89PNG\r\n\x1a\n"
GRAPHS = "ppi:toy_ppi"  # the same graph for every cell: no labels needed
MODELS = ["gremln", "vanilla", "pca", "gremln_finetuned", "vanilla_finetuned", "lasso"]


def perturbseq_like(adata, *, n_perturbations: int = 4, cells: int = 30, seed: int = 0):
    """Perturb-seq-like counts from real cells: control cells, and for each knocked-out gene
    cells where it is zero and 30 target genes are raised."""
    rng = np.random.default_rng(seed)
    source = adata[adata.obs[KEY] == "Dendritic"]
    counts = source.X.toarray()[: cells * (n_perturbations + 1)]
    expressed = np.argsort(-(counts > 0).mean(axis=0))
    knocked_out = expressed[:n_perturbations]
    labels = np.repeat(["control", *source.var_names[knocked_out]], cells)
    for k, gene in enumerate(knocked_out):
        rows = slice((k + 1) * cells, (k + 2) * cells)
        targets = rng.choice(expressed[n_perturbations:300], 30, replace=False)
        counts[rows, gene] = 0
        counts[rows, targets] = counts[rows, targets] * 3 + 2
    return ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=source.var[[]].copy(),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    runs = pretrained_models(
        tmp_path_factory.mktemp("perturbation"), attentions=("diffusion", "vanilla")
    )
    adata = ad.read_h5ad(runs["counts"])
    return runs, adata, perturbseq_like(adata)


def _options(runs) -> dict:
    return dict(
        perturbation_key="perturbation",
        vanilla=runs["vanilla"],
        graph_mode=GRAPHS,
        n_pcs=10,
        epochs=2,
        embed_options=FAST,
        progress=False,
    )


def test_perturbation_evaluation_reports_every_model_and_reruns_identically(setup, tmp_path):
    runs, adata, perturbed = setup
    args = (perturbed, load_model(runs["diffusion"]), runs["graphs"])
    result = evaluate_perturbation(*args, out_dir=tmp_path / "a", **_options(runs))
    assert list(result["models"]) == MODELS
    for scores in result["models"].values():
        for metric in ("accuracy", "macro_f1"):
            assert len(scores[metric]["values"]) == 3 and scores[metric]["std"] >= 0
            assert all(0 <= v <= 1 for v in scores[metric]["values"])
    assert result["models"]["lasso"]["accuracy"]["mean"] > 0.8  # the shifted targets show
    assert result["data"]["cells"] == 120 and result["data"]["control_cells"] == 30
    confusion = np.asarray(result["confusion"]["gremln_finetuned"])
    assert confusion.shape == (4, 4) and confusion.sum() == 3 * 4 * 6  # 20% of 30, per class
    written = (tmp_path / "a" / "perturbation.json").read_text()
    assert json.loads(written) == result
    assert (tmp_path / "a" / "perturbation_confusion.png").read_bytes()[:8] == PNG
    evaluate_perturbation(*args, out_dir=tmp_path / "b", **_options(runs))
    assert (tmp_path / "b" / "perturbation.json").read_text() == written  # seeds fixed


def test_perturbed_genes_are_absent_from_every_input(setup, tmp_path):
    runs, _, perturbed = setup
    model = load_model(runs["diffusion"])
    genes = sorted(set(perturbed.obs["perturbation"]) - {"control"})
    token_ids, _ = model.vocabulary.encode(genes)
    assert (token_ids >= 0).all()  # the model knows them, and the control cells express them
    assert (perturbed[perturbed.obs["perturbation"] == "control", genes].X.sum(axis=0) > 0).all()
    batches = []
    options = _options(runs) | {"embed_options": {**FAST, "hook": batches.append}, "epochs": 1}
    result = evaluate_perturbation(
        perturbed, model, runs["graphs"], out_dir=tmp_path, n_splits=1, **options
    )
    assert result["data"]["removed_genes"] == genes
    assert result["data"]["genes"] == perturbed.n_vars - len(genes)
    # frozen embeddings of both models and both fine-tuned copies: every batch they received
    assert len({id(b) for b in batches}) == len(batches) > 4
    seen = np.unique(np.concatenate([b["gene_ids"].numpy().ravel() for b in batches]))
    assert seen.size > 100 and not np.isin(token_ids, seen).any()
    kept, removed = without_perturbed_genes(perturbed, "perturbation")  # controls included
    assert removed == genes and kept.n_obs == perturbed.n_obs
    assert not kept.var_names.isin(genes).any()


def test_test_cells_perturbation_labels_reach_no_model_input(setup):
    runs, _, perturbed = setup
    model = load_model(runs["diffusion"])
    rows, labels = perturbed_cells(perturbed, "perturbation")
    cells = perturbed[rows].copy()
    classes, codes = np.unique(labels, return_inverse=True)
    train, val, test = random_splits(len(codes), n_splits=1, seed=0, labels=codes)[0]
    shuffled = codes.copy()
    shuffled[test] = np.random.default_rng(1).permutation(codes[test])[::-1]
    assert not np.array_equal(shuffled, codes)
    inputs, predictions = [], []
    for these in (codes, shuffled):
        batches = []
        classify = finetuned_classifier(
            cells, model, runs["graphs"], these, len(classes), graph_mode=GRAPHS, epochs=1,
            max_length=100, hook=batches.append,
        )  # fmt: skip
        predictions.append(classify(train, val, test, 0))
        inputs.append(batches)
    np.testing.assert_array_equal(*predictions)
    assert len(inputs[0]) == len(inputs[1]) > 0
    for first, second in zip(*inputs):
        assert first.keys() == second.keys()
        for key in first:
            torch.testing.assert_close(first[key], second[key])
    relabelled = cells.copy()
    relabelled.obs["perturbation"] = classes[shuffled]
    fit_rows = np.sort(np.concatenate([train, val]))
    common = dict(graph_mode=GRAPHS, n_pcs=10, embed_options=FAST, progress=False)
    frozen = [
        feature_sets(data, {"gremln": model}, runs["graphs"], **common)
        for data in (cells, relabelled)
    ]
    for name in ("gremln", "pca"):
        np.testing.assert_array_equal(frozen[0][name](fit_rows), frozen[1][name](fit_rows))


def test_references_holding_perturbed_cells_are_refused_before_any_work(setup, tmp_path):
    """The perturbed cells' labels must not reach their graphs through an integration against
    a reference that holds some of them; evaluate all refuses before its first evaluation."""
    runs, adata, perturbed = setup
    typed = perturbed[-3:].copy()
    typed.obs = pd.DataFrame({KEY: "Dendritic"}, index=typed.obs_names)
    reference = ad.concat([adata[:300], typed])
    reference.obs = reference.obs[[KEY]]
    graphs = dict(graph_mode="integrated", reference=reference, cell_type_key=KEY)
    refused = f"<reference>: .* 3 of the 120 evaluated cells .*e.g. {typed.obs_names[0]}"
    options = _options(runs) | graphs
    with pytest.raises(InputError, match=refused):
        evaluate_perturbation(
            perturbed, runs["diffusion"], runs["graphs"], out_dir=tmp_path, **options
        )
    with pytest.raises(InputError, match=refused):
        evaluate_all(
            adata[300:600].copy(),  # not in the reference: its own evaluations would run
            runs["diffusion"],
            runs["graphs"],
            out_dir=tmp_path,
            perturbation=perturbed,
            perturbation_key="perturbation",
            progress=False,
            **graphs,
        )
    assert not list(tmp_path.iterdir())  # nothing written


def test_perturbation_errors_name_the_column_and_the_classes(setup):
    _, _, perturbed = setup
    with pytest.raises(InputError, match="no obs column 'guide'"):
        perturbed_cells(perturbed, "guide")
    few = perturbed[perturbed.obs["perturbation"] != perturbed.obs["perturbation"].iloc[-1]]
    few = ad.concat([few, perturbed[-2:]])
    with pytest.raises(InputError, match=r"fewer than 5 cells.*\(2\)"):
        perturbed_cells(few, "perturbation")
    with pytest.raises(InputError, match="two or more"):
        perturbed_cells(perturbed[perturbed.obs["perturbation"] == "control"], "perturbation")


def test_evaluate_all_writes_one_table_with_every_model(setup, tmp_path):
    runs, adata, perturbed = setup
    two_types = adata[adata.obs[KEY].isin(["CD56+ NK", "CD8+/CD45RA+ Naive Cytotoxic"])].copy()
    results = evaluate_all(
        two_types,
        runs["diffusion"],
        runs["graphs"],
        cell_type_key=KEY,
        held_out=hold_out_edges(
            runs["graphs"], tmp_path / "pre.zarr", cell_types=two_types.obs[KEY]
        ),
        out_dir=tmp_path,
        vanilla=runs["vanilla"],
        perturbation=perturbed,
        perturbation_key="perturbation",
        graph_mode=GRAPHS,
        n_splits=2,
        n_pcs=10,
        embed_options=FAST,
        evaluation_options={"edges": {"epochs": 10}, "perturbation": {"epochs": 1}},
        progress=False,
    )
    assert list(results) == ["celltype", "expression", "edges", "perturbation"]
    for evaluation in results:
        assert (tmp_path / f"{evaluation}.json").exists()
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert lines[0].startswith("| model | celltype macro_f1 |") and "edges auroc" in lines[0]
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]] == MODELS
    assert lines[-1].count("–") == 7  # lasso: in the perturbation evaluation only


def test_cli_finetune_perturbation_and_evaluate_all(setup, tmp_path, capsys):
    runs, adata, perturbed = setup
    perturbed.write_h5ad(tmp_path / "perturbed.h5ad")
    command = ["finetune", "perturbation", str(tmp_path / "perturbed.h5ad"), "--model"]
    command += [str(runs["diffusion"]), "--store", str(runs["graphs"]), "--graph-mode", GRAPHS]
    command += ["--quiet", "--max-length", "100", "--n-pcs", "10", "--splits", "1"]
    command += ["--epochs", "1", "--out", str(tmp_path / "p")]
    code = gremln_main([*command, "--perturbation-key", "perturbation"])
    assert code == 0, capsys.readouterr().err
    assert "accuracy" in capsys.readouterr().out
    result = json.loads((tmp_path / "p" / "perturbation.json").read_text())
    assert list(result["models"]) == ["gremln", "pca", "gremln_finetuned", "lasso"]
    code = gremln_main([*command, "--perturbation-key", "guide"])
    error = capsys.readouterr().err
    assert code == 2 and "perturbed.h5ad: no obs column 'guide'" in error.replace("\n", "")
    adata.write_h5ad(tmp_path / "data.h5ad")
    code = gremln_main(
        ["evaluate", "all", str(tmp_path / "data.h5ad"), "--model", str(runs["diffusion"])]
        + ["--store", str(runs["graphs"]), "--cell-type-key", KEY, "--out", str(tmp_path)]
        + ["--perturbation", str(tmp_path / "perturbed.h5ad"), "--perturbation-key", "guide"]
    )
    error = capsys.readouterr().err.replace("\n", "")
    assert code == 2 and "perturbed.h5ad: no obs column 'guide'" in error  # before any run
