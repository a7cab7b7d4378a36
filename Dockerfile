# The MLflow model server for the champion of the registered `breast-cancer-classifier` (CPU):
# the version the alias `champion` points at, i.e. the last one that passed the gate of
# `reporting.champion` (see docs/serving.md).
#
# The model is copied in, not fetched at start-up: download it first, from the project root,
#   MLFLOW_TRACKING_URI=sqlite:///mlflow.db \
#     .venv/bin/mlflow artifacts download -u models:/breast-cancer-classifier@champion -d build/model
#   docker build -t breast-cancer-classifier .
#   docker run --rm -p 8080:8080 breast-cancer-classifier
# then POST to http://127.0.0.1:8080/invocations (see docs/serving.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    PATH=/opt/venv/bin:$PATH \
    # Kedro's per-request progress lines at INFO cost more than a small model's forward pass.
    KEDRO_LOGGING_CONFIG=/app/conf/logging_serving.yml

WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.8

# The requirements recorded with the model (breast_cancer_pipeline.serving_requirements: what
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
CMD ["mlflow", "models", "serve", "-m", "/opt/model", "--env-manager", "local", \
     "--host", "0.0.0.0", "--port", "8080"]
