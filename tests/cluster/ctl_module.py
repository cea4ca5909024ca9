"""./cluster/ctl as a module (it is a script without .py), to test its functions directly
instead of running `up` against the one shared cluster."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from types import ModuleType

from tests.conftest import ROOT


def load_ctl() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("cluster_ctl", str(ROOT / "cluster/ctl"))
    spec = importlib.util.spec_from_loader("cluster_ctl", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
