FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY trialpath ./trialpath
COPY workflows ./workflows
COPY activities ./activities
COPY templates ./templates
COPY worker.py starter.py ./
RUN pip install --no-cache-dir '.[postgres]'
ENV TRIALPATH_TEMPLATES_DIR=/app/templates TRIALPATH_DATA_DIR=/data
CMD ["python", "-m", "worker"]
