FROM python:3.11.11-slim-bookworm
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md requirements-prod.lock ./
# Exactly the tested versions, checked against their hashes.
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-prod.lock
COPY trialpath ./trialpath
COPY workflows ./workflows
COPY activities ./activities
COPY templates ./templates
COPY worker.py starter.py ./
RUN pip install --no-cache-dir --no-deps --no-build-isolation '.[postgres]'
# The workflow sandbox re-imports workflows/ for every workflow it runs or replays; without
# .pyc files (PYTHONDONTWRITEBYTECODE) that means compiling trial.py each time: about a fifth
# of the worker's CPU when its cache churns (bench/load.py).
RUN python -m compileall -q trialpath workflows activities worker.py
ENV TRIALPATH_TEMPLATES_DIR=/app/templates TRIALPATH_DATA_DIR=/data
# Not root: a flaw in a dependency does not hand over the container.
RUN useradd --system --uid 10001 --home-dir /data --no-create-home trialpath \
    && mkdir -p /data && chown trialpath /data
USER 10001
CMD ["python", "-m", "worker"]
