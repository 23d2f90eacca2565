"""The journey core: its definition, pure rules and clock, and the workflow's contract. No I/O,
no clock of its own: imported by everything else."""
