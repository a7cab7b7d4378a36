from breast_cancer_pipeline.pipelines.backbone_selection.pipeline import create_pipeline


def test_one_namespaced_copy_per_candidate_then_selection_and_search(monkeypatch):
    monkeypatch.setattr(
        "breast_cancer_pipeline.pipelines.backbone_selection.pipeline.configured_candidates",
        lambda: ["a", "b"],
    )
    pipeline = create_pipeline()
    names = {node.name for node in pipeline.nodes}
    assert {"a.extract_features", "a.train_head", "b.extract_features", "b.train_head"} <= names
    extract = next(n for n in pipeline.nodes if n.name == "b.extract_features")
    assert extract.inputs == [
        "model_input",
        "augmentation_spec",
        "params:backbone_selection.candidates.b",
        "params:backbone_selection",
    ]
    assert extract.outputs == ["b.backbone_features"]
    search = next(n for n in pipeline.nodes if n.name == "search_head")
    assert set(search.inputs) >= {"selected_backbone", "a.backbone_features", "b.backbone_features"}
    assert search.outputs == ["best_head", "head_search_mlflow_metrics"]
    assert set(pipeline.all_outputs()) >= {
        "selected_backbone",
        "backbone_comparison",
        "backbone_comparison_chart",
        "best_head",
    }
