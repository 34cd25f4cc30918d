"""GREmLN: graph-aware transcriptomics foundation model (not implemented yet; see README)."""
