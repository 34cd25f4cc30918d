"""The one place that knows Dask: which client runs the resamples, and who shuts it down.

A ``Client`` the caller made, or a scheduler address, is used and left running; a local cluster
asked for with ``workers=N`` is made here and closed by the returned callback.
"""

from __future__ import annotations

from collections.abc import Callable


def prepare_client(
    client=None, *, scheduler: str | None = None, workers: int | None = None, threads: int = 1
) -> tuple[object | None, Callable[[], None]]:
    """Resolve what runs the resamples.

    Parameters
    ----------
    client
        An existing ``distributed.Client`` (used as is, not closed).
    scheduler
        Address of a running Dask scheduler, e.g. ``"tcp://10.0.0.5:8786"`` (connected to here,
        the cluster is left running).
    workers
        Start a ``LocalCluster`` with this many worker processes (closed by the callback).
    threads
        Threads per worker of a local cluster.

    Returns
    -------
    The client (``None`` to run in this process) and a callback that releases what was made here.
    """
    given = [client is not None, scheduler is not None, workers is not None]
    if sum(given) > 1:
        raise ValueError("give at most one of client, scheduler and workers")
    if client is not None:
        return client, lambda: None
    if scheduler is None and workers is None:
        return None, lambda: None
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            remote = Client(scheduler)
        except OSError as error:  # a wrong or stopped address: the user's to fix
            from netinfer.io import InputError

            raise InputError(
                f"{scheduler}: no Dask scheduler answers there (--scheduler): {error}. Start "
                "one (dask scheduler), or leave --scheduler out to run on local workers"
            ) from None
        return remote, remote.close
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None
    )
    local = Client(cluster)
    # our workers' stderr is the command's: an input error is reported once, by the command
    local.register_plugin(_quiet_input_errors_plugin()())

    def close() -> None:
        local.close()
        cluster.close()

    return local, close


def _not_an_input_error(record) -> bool:
    return "InputError(" not in record.getMessage()


def _quiet_input_errors_plugin():
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietInputErrors(WorkerPlugin):
        """Drops a worker's "Compute Failed" log (with its traceback) of a task that raised an
        InputError: the command that submitted the task gets the error and prints its message."""

        name = "netinfer-quiet-input-errors"

        def setup(self, worker) -> None:
            import logging

            logging.getLogger("distributed.worker").addFilter(_not_an_input_error)

    return QuietInputErrors


def map_ordered(client, function, items, *, broadcast: dict, on_done: Callable[[], None]):
    """Run ``function(item, **broadcast)`` for every item on the cluster; results in item order.

    The ``broadcast`` arguments (the expression matrix, the threshold) are scattered to every
    worker once instead of being shipped with each task.
    """
    from distributed import as_completed

    # hash=False: unique keys, so a later call scattering the same data never shares (and loses)
    # the futures an earlier call releases
    shared = {
        name: client.scatter(value, broadcast=True, hash=False) for name, value in broadcast.items()
    }
    futures = client.map(function, items, **shared, pure=False)
    position = {future.key: i for i, future in enumerate(futures)}
    results = [None] * len(futures)
    for future in as_completed(futures):
        results[position[future.key]] = future.result()
        on_done()
    return results
