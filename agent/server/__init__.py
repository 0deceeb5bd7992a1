"""The embedded control plane: a clean-room ClearML-compatible server on SQLite."""
