"""The `trialpath` command, one module per command group."""
