"""The public face: every verb importable from the top, lazily (``import forgetscope`` loads no torch)."""

import subprocess
import sys

import pytest

import forgetscope


@pytest.mark.parametrize("name", [n for n in forgetscope.__all__ if n not in ("__version__",)])
def test_every_public_name_resolves_to_the_documented_object(name):
    obj = getattr(forgetscope, name)
    assert obj is not None and (callable(obj) or isinstance(obj, type))
    if name in forgetscope._LAZY:
        module, attr = forgetscope._LAZY[name].split(":")
        assert obj is getattr(__import__(module, fromlist=[attr]), attr)


def test_import_forgetscope_is_light():
    code = "import sys, forgetscope; print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        forgetscope.nope  # noqa: B018
