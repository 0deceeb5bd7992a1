"""One task, stage by stage: plan → source → environment → overrides → supervise → report."""
