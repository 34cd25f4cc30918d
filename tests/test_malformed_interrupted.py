"""What a killed run leaves behind: the store's writer lock (taken over by the next run when its
holder is gone, refused while it lives), a resumable celltype-networks run, and loader workers
(which must die with their trainer)."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from netinfer.store import LOCK_NAME, GraphStore, StoreError

ROOT = Path(__file__).resolve().parent.parent


def _gone(pid: int) -> bool:
    """Whether a process has exited (a zombie not yet reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _lock(path: Path, **holder) -> Path:
    lock = path / LOCK_NAME
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record = {"host": socket.gethostname(), "pid": os.getpid(), "since": now}
    lock.write_text(json.dumps({**record, **holder}))
    return lock


@pytest.mark.parametrize("reason", ["no such process", "pid reused"])
def test_a_lock_whose_holder_is_gone_is_taken_over(tmp_path, reason):
    GraphStore.create(tmp_path / "s.zarr").close()
    if reason == "no such process":
        pid, holder = _dead_pid(), {}
    else:  # this process's id, in a lock taken before this process started
        pid, holder = os.getpid(), {"since": "2020-01-01T00:00:00+00:00"}
    lock = _lock(tmp_path / "s.zarr", pid=pid, **holder)
    with pytest.warns(UserWarning, match=rf"took over the writer lock .*\"pid\": {pid}"):
        store = GraphStore.open(tmp_path / "s.zarr", mode="a")
    assert json.loads(lock.read_text())["since"] != "2020-01-01T00:00:00+00:00"  # ours now
    with pytest.raises(StoreError, match="another writer holds the store"):
        GraphStore.open(tmp_path / "s.zarr", mode="a")  # and refused to the next writer
    store.close()
    assert not lock.exists()
    entries = sorted(p.name for p in (tmp_path / "s.zarr").iterdir())
    assert entries == ["graphs", "vocab", "zarr.json"]


@pytest.mark.parametrize(
    "holder",
    [
        {},  # this process: alive
        {"host": "another-host", "pid": 1},  # on another host: cannot tell, so refused
        {"pid": "not a number"},
    ],
    ids=["live", "other host", "garbled"],
)
def test_a_lock_of_a_live_or_unknown_holder_is_refused(tmp_path, holder):
    GraphStore.create(tmp_path / "s.zarr").close()
    lock = _lock(tmp_path / "s.zarr", **holder)
    before = lock.read_text()
    with pytest.raises(StoreError, match="another writer holds the store") as caught:
        GraphStore.open(tmp_path / "s.zarr", mode="a")
    assert str(holder.get("pid", os.getpid())) in str(caught.value)
    assert lock.read_text() == before


@pytest.mark.filterwarnings("ignore:skipped .* min_cells:UserWarning")
def test_killed_celltype_networks_reruns_to_the_uninterrupted_result(tmp_path):
    from test_cli import PIPELINE_OPTIONS
    from test_pipeline import _typed_counts

    from netinfer.pipeline import celltype_networks

    adata, regulators, _ = _typed_counts()
    adata.write_h5ad(tmp_path / "counts.h5ad")
    (tmp_path / "tfs.txt").write_text("\n".join(regulators) + "\n")

    def command(store: str) -> list[str]:
        args = ["celltype-networks", str(tmp_path / "counts.h5ad"), "--cell-type-key"]
        args += ["cell_type", "--regulators", str(tmp_path / "tfs.txt"), "--store"]
        args += [str(tmp_path / store), *PIPELINE_OPTIONS, "--quiet"]
        code = "import sys; from cli.netinfer import main; sys.exit(main(sys.argv[1:]))"
        return [sys.executable, "-c", code, *args]

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the whole job (the command and its Dask workers) killed once a cluster network is done
    log = open(tmp_path / "killed.err", "w")  # noqa: SIM115 (closed below)
    killed = subprocess.Popen(command("killed.zarr"), env=env, start_new_session=True, stderr=log)
    work = tmp_path / "killed.zarr.work"
    deadline = time.monotonic() + 300
    while not list(work.glob("*[0-9a-f].tsv.gz")):
        assert killed.poll() is None, (tmp_path / "killed.err").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    log.close()
    assert (tmp_path / "killed.zarr" / LOCK_NAME).exists()  # the debris the rerun meets

    rerun = subprocess.run(command("killed.zarr"), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "took over the writer lock" in rerun.stderr and str(killed.pid) in rerun.stderr
    # the uninterrupted run, in this process (no Dask: results do not depend on the workers)
    with GraphStore.create(tmp_path / "whole.zarr") as store:
        celltype_networks(
            adata,
            regulators,
            store=store,
            cell_type_key="cell_type",
            min_counts=500,
            min_genes=10,
            trim=None,
            min_cells=50,
            resolution=0.5,
            resamples=10,
            seed=1,
            work_dir=tmp_path / "whole.work",
        )

    def networks(store: str) -> dict[str, pd.DataFrame]:
        with GraphStore.open(tmp_path / store) as reader:
            return {name: reader.get(name).to_dataframe() for name in reader.list()["name"]}

    resumed, uninterrupted = networks("killed.zarr"), networks("whole.zarr")
    assert set(resumed) == set(uninterrupted) == {"type A", "type B"}
    for name, edges in uninterrupted.items():
        assert len(edges) > 0
        pd.testing.assert_frame_equal(resumed[name], edges)
    assert not (tmp_path / "killed.zarr" / LOCK_NAME).exists()


LOADER = """
import multiprocessing, sys, time
import numpy as np, pandas as pd, torch
from gremln.cellstore import prepare
from gremln.data import CellDataset
from netinfer.store import GraphStore
sys.path.insert(0, {tests!r})
from test_malformed_inputs import TYPES, _counts

folder = {folder!r}
_counts().write_h5ad(folder + "/counts.h5ad")
with GraphStore.create(folder + "/graphs.zarr") as store:
    for cell_type in TYPES:
        edges = pd.DataFrame({{"regulator": ["G00"], "target": ["G05"], "mi": [0.5]}})
        store.add_graph(cell_type, edges, kind="consensus", cell_type=cell_type)
prepare(folder + "/counts.h5ad", folder + "/cells.zarr", graphs_path=folder + "/graphs.zarr",
        cell_type_key="cell_type", min_counts=10, min_genes=5, trim=None, n_bins=5)
dataset = CellDataset(folder + "/cells.zarr", folder + "/graphs.zarr", split=None, batch_size=4)
loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
batches = iter(loader)
next(batches)  # the workers run
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(120)
"""


def test_loader_workers_exit_when_the_trainer_is_killed(tmp_path):
    script = LOADER.format(tests=str(ROOT / "tests"), folder=str(tmp_path))
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    ) as trainer:
        try:
            workers = [int(p) for p in trainer.stdout.readline().split()]
            assert len(workers) == 2 and not any(_gone(p) for p in workers)
        finally:
            trainer.kill()
    killed_at = time.monotonic()
    while not all(_gone(p) for p in workers) and time.monotonic() - killed_at < 2.0:
        time.sleep(0.02)
    assert all(_gone(p) for p in workers), "loader workers outlived their trainer by 2 s"
