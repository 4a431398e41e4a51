"""Step train: fit y = a*x + b by gradient descent and report the fit."""
import os

from common import read, write

validation = read("validation.json")
assert validation["ok"], "validation failed upstream"
data = read("features.json")
rows, scale = data["rows"], data["scale"]
a, b, lr = 0.0, 0.0, 0.5
for _ in range(int(os.environ.get("TRAIN_EPOCHS", "200"))):
    ga = sum((a * r["x"] + b - r["y"]) * r["x"] for r in rows) / len(rows)
    gb = sum((a * r["x"] + b - r["y"]) for r in rows) / len(rows)
    a, b = a - lr * ga, b - lr * gb
slope = a / scale
write("model.json", {"slope": slope, "intercept": b})
try:
    from tabulate import tabulate

    print(tabulate([["slope", f"{slope:.3f}"], ["intercept", f"{b:.3f}"]], headers=["param", "value"]))
except ImportError:
    print(f"train: slope={slope:.3f} intercept={b:.3f}")
