"""The README's paste-able parity example runs as printed and shows agreement to float64 round-off."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_parity_example_runs_and_agrees():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if "ref.load_state_dict(model.state_dict())" in b)
    proc = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    diffs = [float(v) for v in re.findall(r"= ([0-9.e+-]+)$", proc.stdout, flags=re.M)]
    assert len(diffs) == 5, proc.stdout          # four parameters and the input
    assert max(diffs) < 1e-14, proc.stdout
    manual, autograd = re.search(r"loss\s+manual (\S+)\s+autograd (\S+)", proc.stdout).groups()
    assert abs(float(manual) - float(autograd)) < 1e-14
