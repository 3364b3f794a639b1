"""Every registered executor keeps the documented interface (forgetscope.experiments.executors): built by
name with no arguments, ``name`` is its registered name, ``run(session, specs, finished, *, total, done,
experiment)`` returns without work (and without starting a cluster) when there is nothing to run, and an
unknown constructor option is refused with one line. Ray and Slurm are only constructed, never launched."""

from __future__ import annotations

import inspect

import pytest

from forgetscope.errors import ConfigError
from forgetscope.experiments.executors import EXECUTORS, get_executor


def _build(name: str, **options):
    try:
        return EXECUTORS.build(name, **options)
    except ConfigError as exc:  # an optional extra that is not installed says how to install it
        if "cannot be imported" not in str(exc):
            raise
        assert "pip install 'forgetscope[" in str(exc) and "\n" not in str(exc)
        pytest.skip(f"executor {name!r} needs its optional extra: {exc}")


@pytest.mark.parametrize("name", EXECUTORS.names())
def test_executor_interface(name):
    ex = _build(name)
    assert ex.name == name
    params = inspect.signature(type(ex).run).parameters
    positional = [p.name for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    keyword = {p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert positional == ["self", "session", "specs", "finished"]
    assert keyword == {"total", "done", "experiment"}
    calls = []
    # nothing to run: no session, model or cluster is touched and nothing is reported
    assert ex.run(None, [], lambda *a: calls.append(a), total=3, done=3, experiment=None) is None
    assert calls == []


@pytest.mark.parametrize("name", EXECUTORS.names())
def test_executor_refuses_an_unknown_option(name):
    _build(name)  # skips when the optional extra is absent
    with pytest.raises(ConfigError) as info:  # a user error: one line naming the option and the valid ones
        EXECUTORS.build(name, bogus_option=1)
    message = str(info.value)
    assert "\n" not in message and "bogus_option" in message and "choose from" in message


def test_an_unknown_executor_names_the_registered_ones():
    with pytest.raises(ConfigError) as info:
        get_executor("lcoal")
    message = str(info.value)
    assert "\n" not in message and "unknown executor 'lcoal'" in message and "did you mean 'local'" in message
    assert all(n in message for n in EXECUTORS.names())
