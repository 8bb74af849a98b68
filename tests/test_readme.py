"""Every ```python block of README.md runs as written, in order, as a reader would paste them.

The blocks share one namespace (a later block may use `x`, `y` or `model` from an earlier one)
and run in a fresh Python process whose working directory is a temporary folder, so the files
they write (`line.keras`, `logs/`, `backup/`) land there. Blocks of other languages (bash) are
not run.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Runs the blocks of a JSON file one by one; on an error, names the block and exits 1.
RUNNER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for number, (line, source) in enumerate(blocks, 1):
    print(f"README block {number} (README.md line {line})", flush=True)
    try:
        exec(compile(source, f"README.md:{line}", "exec"), namespace)
    except BaseException:
        sys.stderr.write(f"README block {number} (README.md line {line}) raised:\\n")
        traceback.print_exc()
        sys.exit(1)
print("README: all blocks ran", flush=True)
"""


def python_blocks(text):
    """`[(line, source)]` of the ```python blocks, in order; `line` is that of the first code line.

    A fence may be indented (inside a list item): the block is dedented by the fence's indent.
    """
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"( *)(`{3,}|~{3,})\s*python3?\b.*", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening.group(1), opening.group(2)
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        source = "\n".join(
            line[len(indent) :] if line.startswith(indent) else line.lstrip()
            for line in lines[start:end]
        )
        blocks.append((start + 1, source + "\n"))
        i = end + 1
    return blocks


def run_blocks(blocks, cwd, timeout=900):
    """Runs `blocks` (as from `python_blocks`) in order, in one fresh process in `cwd`."""
    (cwd / "blocks.json").write_text(json.dumps(blocks))
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", RUNNER, str(cwd / "blocks.json")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n  ```python\n  y = x\n  ```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = x\n")]


def test_a_failing_block_fails_the_run(tmp_path):
    blocks = [(3, "x = 1\n"), (7, "open('made.txt', 'w').write(str(x))\n"), (9, "1 / 0\n")]
    result = run_blocks(blocks, tmp_path, timeout=60)
    assert result.returncode == 1
    assert "README block 3 (README.md line 9) raised" in result.stderr
    assert "ZeroDivisionError" in result.stderr
    assert (tmp_path / "made.txt").read_text() == "1"  # shared namespace, cwd = tmp_path


def test_readme_python_blocks_compile():
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    for line, source in blocks:
        compile(source, f"README.md:{line}", "exec")


CHECKS = """
import numpy as np, statsmodels.api as sm
ols = keras_mle.closed_form.ols(x, y)
for name in ("m", "b"):
    np.testing.assert_allclose(model.params[name], ols[name], rtol=1e-5, err_msg=name)
glm = sm.GLM(y_counts, sm.add_constant(x_counts), family=sm.families.Poisson()).fit(tol=1e-13)
np.testing.assert_allclose(poisson.params["b"], glm.params[0], rtol=1e-8)
np.testing.assert_allclose(poisson.params["m"], glm.params[1:], rtol=1e-8)
np.testing.assert_allclose(poisson.predict(x_counts, verbose=0), glm.fittedvalues, rtol=1e-8)
assert poisson.param_names == ["m[income]", "m[age]", "b"]
"""


def test_the_first_examples_end_at_the_closed_form_and_at_statsmodels(tmp_path):
    # float32 SGD on adapted data against float64 OLS: 1e-5; the Poisson after refine: 1e-8.
    blocks = python_blocks(README.read_text())
    poisson = [block for block in blocks if "class PoissonRegression" in block[1]]
    blocks = [blocks[0], *poisson, (0, CHECKS)]
    result = run_blocks(blocks, tmp_path, timeout=300)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-5000:])
    assert "README: all blocks ran" in result.stdout


# About a minute: the README's own examples train for hundreds of epochs with progress bars.
@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path):
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    result = run_blocks(blocks, tmp_path)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-5000:])
    assert "README: all blocks ran" in result.stdout
