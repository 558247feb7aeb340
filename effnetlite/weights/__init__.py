"""Models with weights: `create_model`, finding and reading weights in every supported
format, and this project's training checkpoints."""
