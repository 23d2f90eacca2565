"""The HTTP API: the product's backend drives trials without knowing Temporal."""
