"""Step load: produce a small synthetic data set (y = 3x + 2 + noise)."""
import random

from common import write

random.seed(7)
rows = []
for _ in range(500):
    x = random.uniform(0, 10)
    rows.append({"x": x, "y": 3 * x + 2 + random.gauss(0, 0.5)})
write("raw.json", rows)
print(f"load: wrote {len(rows)} rows")
