"""The python blocks of docs/inference.md run as written, and their stated numbers hold."""

import pathlib
import re

import numpy as np

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "inference.md"


def test_inference_doc_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 7
    namespace = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    # The intervals quoted in the text (closed forms in tests/test_profile.py).
    np.testing.assert_allclose(namespace["fit"].conf_int()["sigma"], [0.751, 1.924], atol=6e-4)
    profile = namespace["fit"].conf_int(method="profile")["sigma"]
    np.testing.assert_allclose(profile, [0.912, 2.234], atol=6e-4)
    assert namespace["clustered"].df_inference == 7
    assert namespace["report"].converged
