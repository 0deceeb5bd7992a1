"""The worker: the serving loop, its slots, its wiring and its link to the control plane."""
