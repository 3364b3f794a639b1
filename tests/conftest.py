"""Shared fixtures: tiny in-memory models, a tiny model directory and tiny data files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning God created the heaven and the earth.",
    "A dictionary defines words; an encyclopedia explains things.",
    "def add(a, b): return a + b",
    "The rain in Spain stays mainly in the plain.",
    "To be, or not to be, that is the question.",
    "All happy families are alike; each unhappy family is unhappy in its own way.",
    "It was the best of times, it was the worst of times.",
    "Call me Ishmael.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The mitochondria is the powerhouse of the cell.",
    "Seven plus five equals twelve.",
]


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a 2-layer random Llama with a byte-level BPE tokenizer, built in memory."""
    from forgetscope.testing import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from forgetscope.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny-model") / "model")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tiny_data(tmp_path) -> dict[str, Path]:
    """Upstream text file plus two small, different tasks (plain text and prompt/response)."""
    up = write_jsonl(tmp_path / "data" / "upstream.jsonl",
                     [{"id": f"u{i}", "text": t} for i, t in enumerate(TEXTS)]
                     + [{"id": "q1", "prompt": "What is two plus two?", "response": "Four.", "answer": "four"}])
    code = write_jsonl(tmp_path / "data" / "code.jsonl",
                       [{"text": f"def f{i}(x):\n    return x * {i} + {i % 3}"} for i in range(12)])
    qa = write_jsonl(tmp_path / "data" / "qa.jsonl",
                     [{"prompt": f"What is {i} plus {i}?", "response": f"{2 * i}."} for i in range(12)])
    return {"upstream": up, "code": code, "qa": qa, "root": tmp_path}


def sweep_config_dict(tiny_dir: Path, data: dict[str, Path], output: Path, **train) -> dict:
    return {
        "model": str(tiny_dir),
        "output": str(output),
        "seed": 0,
        "upstream": {"source": str(data["upstream"])},
        "tasks": [{"name": "code", "source": str(data["code"]), "heldout": 3},
                  {"name": "qa", "source": str(data["qa"]), "heldout": 3}],
        "train": {"method": "full", "steps": 3, "batch_size": 4, "lr": 1e-2, "max_length": 64, **train},
        "eval": {"max_batch_tokens": 256},
    }


def load_script(path: Path):
    """A benchmark or build script (not a package module) imported from its file, registered under its
    name (dataclasses look their module up by name)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module



def chosen_regime_train(model: str = "smollm2") -> dict:
    """The `train` block the committed regime pilot of MODEL selected: what every study config that waited for
    the regime must now hold."""
    repo = Path(__file__).parents[1]
    return json.loads((repo / "benchmarks" / "results" / "study" / model / "regime.json").read_text())["train"]
