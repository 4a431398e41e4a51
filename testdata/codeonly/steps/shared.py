"""Helpers shared by the steps: where the run directory is."""
import os


def run_dir():
    path = os.environ.get("KILN_RUN_DIR")
    if not path:
        raise SystemExit("KILN_RUN_DIR is not set")
    os.makedirs(path, exist_ok=True)
    return path
