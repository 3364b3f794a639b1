"""Contracts every registered predictor and every registered strategy must keep.

Parametrised over the registries themselves, so a newly registered predictor or strategy is checked
without anyone adding it here.
"""

from __future__ import annotations

import copy
import json
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TEXTS

from forgetscope.errors import ConfigError, ForgetscopeError
from forgetscope.predict import PREDICTORS, get_predictor
from forgetscope.train import STRATEGIES, make_strategy

# ---- predictors --------------------------------------------------------------------------------

M, N, RANK = 8, 30, 2


def _fake_embedder(texts):
    """Deterministic 16-d vectors per text (stands in for MiniLM: no model files needed)."""
    return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=16) for t in texts])


TASK_TEXTS = [f"task number {i}" for i in range(M)]
EXAMPLE_TEXTS = [f"upstream example {j}" for j in range(N)]
# the upstream table every fit receives (only predictors with example features read it)
UPSTREAM = pd.DataFrame({"example_id": [f"u{j}" for j in range(N)], "loss_before": np.linspace(1.0, 4.0, N),
                         "n_tokens": np.arange(N) % 7 + 20, "category": [f"c{j % 3}" for j in range(N)]})


def _params(name: str) -> dict:
    return {"embedder": _fake_embedder} if name in ("semantic", "semantic-knn") else {}


def _fit(name: str, known: np.ndarray):
    p = get_predictor(name, **_params(name))
    out = p.fit(known, task_texts=TASK_TEXTS, example_texts=EXAMPLE_TEXTS, upstream=UPSTREAM)
    assert out is p  # fit returns the predictor, so get_predictor(...).fit(known).predict(...) chains
    return p


def _text(i: int = 0) -> dict:
    """The new task's text (only text-based predictors use it; every predictor accepts it)."""
    return {"task_text": f"new task {i}"}


@pytest.fixture(scope="module")
def lowrank_rows():
    """(known M x N, new 3 x N): rows of one rank-2 matrix plus a little noise, NaN-free."""
    rng = np.random.default_rng(0)
    U = rng.normal(size=(M + 3, RANK))
    V = rng.normal(size=(RANK, N))
    F = U @ V + 0.3 + 0.01 * rng.normal(size=(M + 3, N))
    return F[:M], F[M:]


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_predictor_contract(name, lowrank_rows):
    known, new = lowrank_rows
    probe = np.array([1, 4, 7, 11, 15, 22, 28])
    p = _fit(name, known)
    assert (p.n_rows_, p.n_cols_) == (M, N)
    row = p.predict(probe, new[0, probe], **_text())
    assert isinstance(row, np.ndarray) and row.shape == (N,) and row.dtype == np.float64
    assert np.isfinite(row).all()
    if p.output == "probability":
        assert ((row >= 0) & (row <= 1)).all()
    else:
        assert p.output == "forgetting"
    # predict_rows completes several rows at once, exactly as predict does one at a time
    texts = [f"new task {i}" for i in range(len(new))]
    rows = p.predict_rows(probe, new[:, probe], task_texts=texts)
    assert rows.shape == (len(new), N)
    for i in range(len(new)):
        np.testing.assert_allclose(rows[i], p.predict(probe, new[i, probe], **_text(i)), rtol=1e-10,
                                   atol=1e-12)
    # a NaN probe value (a failed evaluation) is predicted from the finite probe entries only
    holed = new[0, probe].copy()
    holed[2] = np.nan
    keep = np.arange(probe.size) != 2
    np.testing.assert_allclose(p.predict(probe, holed, **_text()),
                               p.predict(probe[keep], new[0, probe[keep]], **_text()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_predictor_refuses_predict_before_fit(name):
    p = get_predictor(name, **_params(name))
    with pytest.raises(ForgetscopeError, match="fit") as exc:
        p.predict(np.array([0, 1]), np.array([0.1, 0.2]))
    assert "\n" not in str(exc.value) and name in str(exc.value)


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_predictor_unknown_parameter_is_config_error(name):
    with pytest.raises(ConfigError, match="no_such_param") as exc:
        get_predictor(name, no_such_param=1)
    assert "\n" not in str(exc.value)


# ---- strategies --------------------------------------------------------------------------------

UPSTREAM_PAIR = {"prompt": "What is two plus two?", "response": "Four."}


def _upstream():
    from forgetscope.data.types import Example

    return ([Example(f"u{i}", text=t) for i, t in enumerate(TEXTS)]
            + [Example("q1", **UPSTREAM_PAIR)])


def _strategy_cases() -> list[tuple[str, str | None]]:
    """Every registered strategy; replay once per policy (predicted offline and online)."""
    cases = []
    for name in STRATEGIES.names():
        if name == "replay":
            cases += [("replay", policy) for policy in ("random", "predicted", "online", "oracle", "mir")]
        else:
            cases.append((name, None))
    return cases


# options a strategy cannot do without (everything else has a default)
REQUIRED = {"lwf": {"forget_data": "demo:poetry"}}


def _options(name: str, policy: str | None, upstream_ids: list[str]) -> dict:
    """Small, fast options; the policies that need forgetting values get them."""
    if name == "replay":
        opts = {"ratio": 0.5, "policy": "predicted" if policy == "online" else policy}
        if policy == "oracle":
            opts["forgetting"] = {u: float(k % 3) - 0.5 for k, u in enumerate(upstream_ids)}
        elif policy in ("predicted", "online"):  # a predictor fitted on other tasks' rows
            known = np.random.default_rng(1).normal(size=(4, len(upstream_ids)))
            opts.update(predictor=get_predictor("knn", k=2).fit(known), predictor_columns=upstream_ids, probe=0.3)
            # offline: the probe values come from a pilot; online: from the model after its warm-up step
            opts.update(pilot_steps=1) if policy == "predicted" else opts.update(mode="online")
        elif policy == "mir":
            opts["candidates"] = 4
        return opts
    return {"ewc": {"n_fisher": 4}, "lwf": {**REQUIRED["lwf"], "n_self": 2, "gen_tokens": 3, "interval": 1},
            "sam": {"rho": 0.05}}.get(name, {})


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_builds_with_defaults(name):
    s = make_strategy(name, **REQUIRED.get(name, {}))
    assert s.name == name
    with pytest.raises(ConfigError):
        make_strategy(name, no_such_option=1, **REQUIRED.get(name, {}))
    if name in REQUIRED:  # without its required options: one clear line
        with pytest.raises(ConfigError) as exc:
            make_strategy(name)
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("name", "policy"), _strategy_cases(),
                         ids=[n if p is None else f"{n}-{p}" for n, p in _strategy_cases()])
def test_strategy_contract(tiny, name, policy):
    from forgetscope.config import TrainConfig
    from forgetscope.data.types import Example, Task
    from forgetscope.train import train_on_task

    model, tok = tiny
    upstream = _upstream()
    upstream_ids = [e.example_id for e in upstream]
    task = Task("toy", [Example(f"t{i}", text=f"def f{i}(x): return x * {i}") for i in range(6)],
                [Example("h", text="def g(y): return y")])
    cfg = TrainConfig(method="full", steps=2, batch_size=3, lr=1e-2, max_length=32)
    strategy = make_strategy(name, **_options(name, policy, upstream_ids))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_on_task(copy.deepcopy(model), tok, task, cfg, strategy=strategy, upstream=upstream,
                           progress=False)
    rec = result.record
    assert rec["strategy"] == name == strategy.name and rec["steps"] == 2
    summary = strategy.summary()
    assert isinstance(summary, dict)
    assert json.loads(json.dumps(summary)) == json.loads(json.dumps(rec["strategy_info"]))  # plain JSON
    excluded = strategy.excluded_upstream_ids()
    assert isinstance(excluded, set) and excluded <= set(upstream_ids)
    assert result.excluded_upstream_ids == excluded
    assert np.isfinite(rec["task_loss_after"]) and np.isfinite(rec["train_loss_first"])
    trained = dict(result.model.named_parameters())
    assert set(trained) == set(base)
    assert any(not torch.equal(trained[n], base[n]) for n in base)  # training moved the weights
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters())  # the base model is untouched
