"""Slurm jobs as resources: scheduler command text and parsing (scheduler.py) kept apart from where
the commands run (runner.py: a local subprocess now, SSH later), and the job provider (jobs.py)."""
