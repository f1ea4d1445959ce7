"""bench/gpu_check.sh, the prepared GPU check, run here in its reduced CPU mode: the real 1.3B
architecture (random weights, bf16) through the engine with each switch, and the GPU path's
checks (prompt memory, the out-of-memory split, TaylorSeer, the encoder), as a GPU run does them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_gpu_check_runs_every_configuration_and_check_on_the_cpu(tmp_path: Path) -> None:
    done = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--reduced"], cwd=ROOT, capture_output=True,
                          text=True, timeout=280, env={**os.environ, "OUT": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["device"] == "cpu" and report["size"] == {"width": 64, "height": 64, "frames": 5, "steps": 2}
    rows = {(row["config"], row["batch"]): row for row in report["rows"]}
    assert set(rows) == {("bf16", 1), ("bf16", 4), ("bf16 + first-block", 1), ("bf16 + int8", 1), ("bf16 + int8", 4)}
    assert all(row["s_per_step"] > 0 and row["decode_s"] > 0 and row["peak_gib"] > 2.5 for row in rows.values())
    assert rows[("bf16 + first-block", 1)]["steps_skipped"] == 1 and rows[("bf16", 1)]["steps_skipped"] == 0
    checks = report["checks"]
    assert "Int8" in checks["low_precision_weights"] or "Affine" in checks["low_precision_weights"], checks
    assert checks["embeddings_flat"], checks["embeddings_mib_after_8_and_50_prompts"]
    assert checks["oom_split_rendered"] == 4
    assert checks["taylorseer_steps_skipped"] == 1 and checks["encoder"]["codec"] == "libx264"
    assert "x bf16 b1" in done.stdout and "embeddings_flat: True" in done.stdout
