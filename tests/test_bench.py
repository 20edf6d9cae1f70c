"""eval/bench.py runs end to end and reports every path (a smoke test: no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_bench_reports_fast_reference_and_export(tmp_path):
    out_json = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, str(REPO / "eval" / "bench.py"), "--models", "p4cnn_rotmnist",
                          "--batch-sizes", "2", "--repeats", "0", "--modes", "eval",
                          "--json", str(out_json)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out_json.read_text())
    assert sorted(r["path"] for r in rows) == ["export", "fast", "reference"]
    assert all(r["images_per_s"] > 0 and r["peak_bytes"] >= 0 for r in rows)
    assert "vs ref" in out.stdout and "of export speed" in out.stdout
