"""Step report: print the sum consume wrote, and the greeting."""
import os

from shared import run_dir

with open(os.path.join(run_dir(), "sum.txt")) as f:
    total = f.read().strip()
greeting = os.environ.get("CODEONLY_GREETING", "?")
print(f"report ({os.environ.get('REPORT_FORMAT', '?')}): sum={total}; {greeting}")
