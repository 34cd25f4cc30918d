"""AnnData in and out: the input checks every single-cell command shares (``validate``)."""
