"""Step produce: write the numbers 1..10 to $KILN_RUN_DIR/numbers.txt."""
import os

from shared import run_dir

numbers = list(range(1, 11))
with open(os.path.join(run_dir(), "numbers.txt"), "w") as f:
    f.write("\n".join(str(n) for n in numbers) + "\n")
print(f"produce: wrote {len(numbers)} numbers")
