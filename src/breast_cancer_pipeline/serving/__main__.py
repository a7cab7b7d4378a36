"""``python -m breast_cancer_pipeline.serving`` (``make serve``): the model server."""

from breast_cancer_pipeline.serving.server import main

if __name__ == "__main__":
    main()
