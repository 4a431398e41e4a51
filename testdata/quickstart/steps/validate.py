"""Step validate: reject data with missing or absurd values."""
import math
import sys

from common import read, write

rows = read("raw.json")
bad = [r for r in rows if not all(math.isfinite(v) for v in r.values())]
if bad:
    print(f"validate: {len(bad)} bad rows", file=sys.stderr)
    sys.exit(1)
write("validation.json", {"rows": len(rows), "ok": True})
print(f"validate: {len(rows)} rows ok")
