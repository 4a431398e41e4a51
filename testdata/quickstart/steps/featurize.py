"""Step featurize: scale x into [0, 1] and keep the scale for later."""
from common import read, write

rows = read("raw.json")
top = max(r["x"] for r in rows)
features = [{"x": r["x"] / top, "y": r["y"]} for r in rows]
write("features.json", {"scale": top, "rows": features})
print(f"featurize: scaled {len(features)} rows by 1/{top:.3f}")
