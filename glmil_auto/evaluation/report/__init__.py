"""The HTML report of glmil_evaluate, its figures, the SHAP summary and the PNG rendering."""
