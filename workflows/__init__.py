"""Workflows: timing and Temporal glue only; decisions live in trialpath.core.journey."""
