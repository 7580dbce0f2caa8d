"""Import Gradio without rewriting its type stubs.

Each Gradio component class, as it is defined, parses its own module's source and the matching
.pyi stub and rewrites the stub if it differs (`component_meta.create_or_modify_pyi`). The stubs
serve editors, not the running app; on a 2-core machine this takes about 3 s of every start, more
than half of Gradio's import. `skip_stub_rewriting()` must run before the first `import gradio`
(the glmtts package runs it when imported); afterwards it changes nothing.
"""

from __future__ import annotations

import importlib.machinery
import sys

_MODULE = "gradio.component_meta"


class _SkipStubRewriting:  # a meta path finder (importlib.abc would cost an import)
    """Finds gradio.component_meta as usual, then replaces its stub writer before any component is defined."""

    def find_spec(self, name, path, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            module.create_or_modify_pyi = _leave_stubs

        spec.loader.exec_module = exec_module
        return spec


def _leave_stubs(component_class, class_name, events) -> None:
    """The stubs Gradio ships stay as they are."""


def skip_stub_rewriting() -> None:
    if _MODULE not in sys.modules and not any(isinstance(finder, _SkipStubRewriting) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SkipStubRewriting())
