"""Step consume: sum what produce wrote, write $KILN_RUN_DIR/sum.txt."""
import os

from shared import run_dir

with open(os.path.join(run_dir(), "numbers.txt")) as f:
    total = sum(int(line) for line in f if line.strip())
with open(os.path.join(run_dir(), "sum.txt"), "w") as f:
    f.write(f"{total}\n")
print(f"consume: sum={total}")
