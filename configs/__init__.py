"""Experiment configs: `get_config()` files for ml_collections config_flags."""
