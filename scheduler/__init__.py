"""The daemon: an APScheduler-driven worker that fires due deadlines (see worker.py)."""
