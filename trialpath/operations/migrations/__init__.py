"""Alembic's script directory for Trialpath's own database: `env.py` and `versions/`.

Shipped inside the package so an installed Trialpath (the Docker image) can migrate its
database at start; see trialpath/operations/migrate.py and docs/operations.md.
"""
