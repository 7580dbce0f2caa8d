"""What start-up skips: Gradio's rewriting of its type stubs, and jieba's import of pkg_resources."""

import subprocess
import sys

from ..conftest import TESTS


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=TESTS.parent).stdout


def test_gradio_is_imported_without_rewriting_its_stubs():
    out = _run("import glmtts.ui, gradio.component_meta as meta; print(meta.create_or_modify_pyi.__module__)")
    assert out.strip() == "glmtts.gradio_stubs"


def test_jieba_is_imported_without_pkg_resources_and_finds_its_dictionary():
    code = (
        "import sys; from glmtts.frontend.g2p_zh import _import_jieba; jieba = _import_jieba(); "
        "print('pkg_resources' in sys.modules, len(jieba.Tokenizer().get_dict_file().read(100)))"
    )
    assert _run(code).split() == ["False", "100"]
