"""What a fold writes about its validation cases: predictions files, metrics, SHAP."""
