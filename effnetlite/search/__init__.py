"""The compound-scaling search: the alpha/beta/gamma grid, the Optuna study, the report."""
