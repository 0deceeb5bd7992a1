"""``conveyor slurm``: a glue daemon that runs queued tasks as Slurm batch jobs (docs/slurm.md)."""
