"""The README's Python snippets run as copied: each ```python block, from a folder holding only
hubconf.py (as a user's clone would), offline, with weights from the package and the mirror."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import MIRROR, REPO, SHARED

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_the_readme_has_its_python_snippets():
    assert len(BLOCKS) >= 2
    assert any('source="local"' in b for b in BLOCKS)  # torch.hub.load of a folder needs it


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_offline(index, tmp_path):
    shutil.copyfile(REPO / "hubconf.py", tmp_path / "hubconf.py")  # torch.hub.load(".", ...)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGCNN_ZOO_", "HF_"))}
    env.update(PYTHONPATH=str(REPO), AGCNN_ZOO_OFFLINE="1", HF_HUB_OFFLINE="1",
               AGCNN_ZOO_CACHE=str(tmp_path / "cache"), TORCH_HOME=str(tmp_path / "torch"),
               HF_HUB_DISABLE_TELEMETRY="1")
    if SHARED.is_dir():  # every snippet's weight ships in the package; the mirror serves the rest
        env["AGCNN_ZOO_MIRROR"] = str(MIRROR)
    proc = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README block {index}:\n{BLOCKS[index]}\n{proc.stderr[-3000:]}"
