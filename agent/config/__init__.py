"""Configuration: the frozen Settings, ~/clearml.conf reading, the agent's own log setup."""
