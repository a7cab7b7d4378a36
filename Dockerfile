# The project's model server (src/breast_cancer_pipeline/serving/, what `make serve` runs) for
# the champion of the registered `breast-cancer-classifier` (CPU): MLflow's /invocations with
# the serving limits (an HTTP 413 for an oversized body) and the page to try the model. The
# champion is the version the alias `champion` points at, i.e. the last one that passed the
# gate of `reporting.champion` (see docs/serving.md).
#
# The model is copied in, not fetched at start-up: download it and its model card first, from
# the project root (the card gives the page its intended-use line),
#   export MLFLOW_TRACKING_URI=sqlite:///mlflow.db
#   .venv/bin/mlflow artifacts download -u models:/breast-cancer-classifier@champion -d build/model
#   .venv/bin/python -c "import mlflow; v = mlflow.MlflowClient().get_model_version_by_alias(
#     'breast-cancer-classifier', 'champion'); print(v.tags['model_card'])" |
#     xargs -I{} .venv/bin/mlflow artifacts download -u {} -d build/model
#   docker build -t breast-cancer-classifier .
#   docker run --rm -p 8080:8080 breast-cancer-classifier
# then open http://127.0.0.1:8080/ or POST to /invocations (see docs/serving.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    PATH=/opt/venv/bin:$PATH \
    # Kedro's per-request progress lines at INFO cost more than a small model's forward pass.
    KEDRO_LOGGING_CONFIG=/app/conf/logging_serving.yml \
    MODEL_URI=/opt/model \
    HOST=0.0.0.0 \
    PORT=8080

WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.8

# The requirements recorded with the model (breast_cancer_pipeline.serving.packaging: what
# serving imports, none of the training tools), then the project itself without dependencies:
# the pickled pyfunc model imports breast_cancer_pipeline (decoder, served pipeline).
COPY build/model/requirements.txt /opt/requirements.txt
RUN uv venv /opt/venv && uv pip install --python /opt/venv/bin/python --no-cache \
    -r /opt/requirements.txt
COPY pyproject.toml ./
COPY src/ src/
RUN uv pip install --python /opt/venv/bin/python --no-cache --no-deps .
COPY conf/logging_serving.yml conf/logging_serving.yml
COPY build/model /opt/model

RUN useradd --create-home --uid 1000 serve
USER serve
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)"
CMD ["python", "-m", "breast_cancer_pipeline.serving"]
