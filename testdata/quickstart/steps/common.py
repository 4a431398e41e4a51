"""Helpers shared by the quickstart steps: where the run's files live."""
import json
import os
import pathlib


def run_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("KILN_RUN_DIR", "/tmp/kiln-run"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def write(name: str, value) -> None:
    (run_dir() / name).write_text(json.dumps(value))


def read(name: str):
    return json.loads((run_dir() / name).read_text())
