"""The worker daemon: one per machine, runs containers for the control plane."""
