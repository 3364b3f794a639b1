"""Sweep configuration: YAML validated by pydantic, with errors that name the bad field.

A sweep config says which base model, which upstream examples, which tasks, and how to fine-tune::

    model: smollm2-135m-instruct        # default alias, a .gguf file, a local dir or a hub id
    output: sweeps/demo
    seed: 0
    upstream: {source: demo, n: 200}   # or {source: path/to/file.jsonl, text_field: ...}
    tasks: [code, bible, {name: mine, source: data/mine.jsonl}]
    train: {method: lora, steps: 30, lr: 5e-4, batch_size: 8, max_length: 64}
    eval: {max_length: auto, max_batch_tokens: 4096, exact_match: true}
    load: {dtype: float32, device_map: null, attn_implementation: null, load_in_4bit: false}
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from forgetscope.data.sources import parse_source
from forgetscope.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def names_to_tasks(v: Any) -> Any:
    """Let a task list say just a name (``[code, bible]``) for ``{name: code}``."""
    if isinstance(v, list):
        return [{"name": t} if isinstance(t, str) else t for t in v]
    return v


#: The training-curve backends ``report_to`` may name (``forgetscope.train.tracking`` starts them).
BACKENDS = ("tensorboard", "wandb")
OFF = ("none", "", "off", "false", "no")


def parse_report_to(report_to: str | Iterable[str] | None) -> list[str]:
    """Normalise the switch to a list of backend names; unknown names raise a ConfigError naming them."""
    if report_to is None:
        return []
    items = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [n for n in (str(x).strip().lower() for x in items) if n not in OFF]
    if "all" in names:
        names = list(BACKENDS)
    bad = sorted(set(names) - set(BACKENDS))
    if bad:
        raise ConfigError(f"report_to: unknown backend(s) {', '.join(bad)}; choose none, {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


class TrainConfig(_Strict):
    """How one run fine-tunes; everything that changes the result is here, so it is recorded."""

    method: Literal["full", "lora"] = Field("lora", description="lora: train low-rank adapters on the frozen "
                                            "base; full: train every weight")
    steps: int = Field(30, ge=1, description="optimizer steps per run")
    lr: float = Field(5e-4, gt=0, description="peak learning rate of AdamW")
    batch_size: int = Field(8, ge=1, description="task examples per micro-batch")
    max_length: int = Field(64, ge=2, description="training examples are cut to this many tokens (measurement "
                            "uses eval.max_length)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay")
    warmup_steps: int = Field(0, ge=0, description="steps of linear learning-rate warm-up; 0: none")
    grad_clip: float | None = Field(1.0, gt=0, description="the gradient's global norm is clipped to this; "
                                    "null: no clipping")
    lora_rank: int = Field(8, ge=1, description="rank of each LoRA adapter")
    lora_alpha: float | None = Field(None, description="LoRA scaling numerator (the update is scaled by "
                                     "alpha / rank); null: 2 x lora_rank")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA adapters' input")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        "all-linear", description="LoRA targets: all-linear (default: every linear layer but the output head, "
        "peft's all-linear), a list of module names, or null for peft's default of the architecture (q_proj and "
        "v_proj on Llama and Gemma, what sweeps recorded with null before all-linear became the default)")
    seed: int = Field(0, description="seed of the training order and the adapters' initialisation")
    device: str = Field("auto", description="where to train: auto (a GPU when there is one), cpu, cuda, "
                        "cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="forward-pass dtype; the weights keep load.dtype. auto: bfloat16 autocast on CUDA "
        "with bf16 support, float32 elsewhere")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches of batch_size whose gradients one "
                                  "optimizer step sums (effective batch: batch_size x grad_accum_steps); "
                                  "each is weighted by its share of the step's scored tokens, so the step "
                                  "equals one on the whole batch")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass "
                                         "instead of storing them: less memory, ~30% more compute, the "
                                         "same gradients (not part of the fingerprint)")


class LoadConfig(_Strict):
    """How model weights are loaded, the same way for the base model and for every model measured against it
    (a sweep's runs, ``forgetscope measure``'s fine-tunes, a forecast's model). The defaults load float32
    weights on ``train.device``, as every recorded sweep did."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="weight dtype. float32 (default): measured losses and small updates need it; "
        "bfloat16/float16 halve memory (allowed on a CPU, but slow there) and round every weight and update; "
        "auto: bfloat16 on CUDA with bf16 support, else float32")
    device_map: str | dict[str, int | str] | None = Field(
        None, description="accelerate's placement of the layers: auto, balanced, sequential, a device, or a "
        "{module: device} mapping; null (default): the whole model on train.device. Set, it decides where the "
        "model lives, so train.device must stay auto")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="attention kernel; null (default): transformers' choice for the model. "
        "flash_attention_2 needs the flash-attn package and a CUDA GPU, in bfloat16 or float16")
    load_in_4bit: bool = Field(
        False, description="4-bit NF4 weights through bitsandbytes (QLoRA): needs bitsandbytes installed and "
        "LoRA (quantized weights cannot be trained or perturbed), computes in dtype")

    @model_validator(mode="after")
    def _check(self) -> LoadConfig:
        if self.attn_implementation == "flash_attention_2" and self.dtype == "float32":
            raise ValueError("attn_implementation: flash_attention_2 runs in bfloat16 or float16; set dtype")
        return self

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`forgetscope.models.load_model` these settings stand for."""
        return self.model_dump()


class SourceConfig(_Strict):
    """Where examples come from: ``demo`` (the built-in suite), a file, a ``save_to_disk`` directory,
    or a hub dataset ``hf:NAME[:CONFIG]`` (online or cached)."""

    source: str = Field("demo", description="demo (the built-in suite), a .jsonl/.json/.parquet/.csv/.tsv file, a "
                        "save_to_disk directory, or hf:NAME[:CONFIG]")
    split: str | None = Field(None, description="a split of a DatasetDict directory or a hub dataset "
                              "(null: train)")
    n: int | None = Field(None, ge=0, description="examples kept (a seeded subset; null: all). 0: demo upstream "
                          "only, no plain-text examples (instruction pairs only)")
    n_instruct: int = Field(0, ge=0, description="demo only: add this many instruction pairs with short answers "
                            "(scored by exact match)")
    lm_targets: Literal["human", "text", "base_continuations", "base_samples"] = Field(
        "human", description="demo only: which shipped plain-text (lm) set. human (default): human-written, "
        "pretraining-like text; text: the original 400 demo texts; base_continuations: the default model's "
        "greedy continuations of those (biased towards forgetting by construction); base_samples: its "
        "temperature-1 samples continuing the human texts (see forgetscope.data.demo)")
    instruct_targets: Literal["gold", "base_samples"] = Field(
        "gold", description="demo only: the instruction pairs' responses are the gold answers (gold), or the "
        "default model's own temperature-1 answers (base_samples; exact match still uses the gold answers)")
    text_field: str = Field("text", description="the column holding a plain-text example")
    prompt_field: str = Field("prompt", description="the column holding an instruction pair's prompt")
    response_field: str = Field("response", description="the column holding an instruction pair's response")
    answer_field: str = Field("answer", description="the column holding the short gold answer exact match "
                              "checks (optional)")
    id_field: str = Field("id", description="the column holding each example's id (without one: NAME-ROW, "
                          "the row's position in the file)")

    def check_demo_targets(self) -> None:
        """As an experiment's upstream set: ``lm_targets`` and ``instruct_targets`` choose among the shipped
        demo sets, so another source with either set is a ValueError (the experiment's config names it)."""
        demo_sets = self.source is not None and parse_source(self.source).is_demo_suite
        if not demo_sets and (self.lm_targets != "human" or self.instruct_targets != "gold"):
            raise ValueError(f"upstream.lm_targets and upstream.instruct_targets choose among the shipped demo "
                             f"sets; they do not apply to source {self.source!r}")

    @model_validator(mode="after")
    def _n_zero_only_for_demo_pairs(self) -> SourceConfig:
        demo_suite = self.source is not None and parse_source(self.source).is_demo_suite  # a task may have None
        if self.n == 0 and not (demo_suite and self.n_instruct > 0):
            raise ValueError("n: 0 keeps no examples; only the demo upstream set with n_instruct > 0 may "
                             "leave out its plain texts")
        return self


DEFAULT_HELDOUT = 0.2


class TaskConfig(SourceConfig):
    lm_targets: Literal["human", "text", "base_continuations", "base_samples"] = Field(
        "text", description="does not apply to a task; it keeps the value it had before the upstream default "
        "changed, so the fingerprints of sweeps recorded earlier stay the same")
    name: str = Field(description="the task's name (a row of the forgetting matrix); alone, a shipped demo task")
    source: str | None = Field(None, description="where the task's examples come from, as upstream.source; "
                               "null: the demo task of this name")
    n_train: int | None = Field(None, ge=1, description="training examples kept (a seeded subset; null: all)")
    heldout: float | int = Field(0.2, description="a fraction in (0, 1) or a number of examples split off the "
                                 "task's data as its held-out set (a demo task keeps its own)")
    description: str = Field("", description="a line saying what the task is, shown in reports")
    family: Literal["instruction", "plain_text"] | None = Field(
        None, description="instruction or plain_text, recorded with every run; null: the demo index's, else "
        "from the data's format")
    seeds: list[int] | None = Field(None, description="a sweep's seeds for this task only (null: the sweep's "
                                    "seeds)")
    control: Literal["shuffled_responses"] | None = Field(
        None, description="a control row instead of the task itself: shuffled_responses pairs each training "
        "prompt with another training example's response (a seeded derangement; the held-out pairs stay "
        "real), so the run learns the form of the answers (chat format, length, end of turn) without their "
        "content")

    @field_validator("heldout")
    @classmethod
    def _heldout_is_a_fraction_or_a_count(cls, v: float | int, info: ValidationInfo) -> float | int:
        if isinstance(v, float) and not (0 < v < 1 or (v >= 1 and v.is_integer())):
            raise ValueError(f"{v} is neither a fraction in (0, 1) nor a whole number of examples")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"{v}: a number of held-out examples is at least 1")
        source = info.data.get("source")
        if v != DEFAULT_HELDOUT and (source is None or parse_source(str(source)).is_demo_task):
            raise ValueError(f"a shipped demo task keeps the held-out examples shipped with it, so heldout "
                             f"does not apply to task {info.data.get('name')!r}; remove it (or give the "
                             "task's data as a file to split it your way)")
        return v


DEFAULT_EVAL_MAX_LENGTH = 512


class EvalConfig(_Strict):
    """How upstream examples are measured. ``max_length`` is separate from ``train.max_length``: a
    measurement should see whole examples while training may cut for speed. ``auto`` (the default) is
    512 tokens capped at the model's context, which cuts none of the demo's upstream examples (the
    longest is about 60 tokens); a number above the context is an error. Truncated examples are counted
    in the manifest.
    ``max_batch_tokens`` and ``max_batch_size`` only trade memory for speed (not part of the fingerprint)."""

    max_length: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto", description="tokens of each upstream example measured; auto: 512 capped at the model's "
        "context. A number above the context is an error; truncated examples are counted in the manifest")
    max_batch_tokens: int = Field(4096, ge=16, description="padded tokens per evaluation batch (memory for "
                                  "speed only; not part of the fingerprint)")
    max_batch_size: int = Field(64, ge=1, description="examples per evaluation batch (memory for speed only; "
                                "not part of the fingerprint)")
    exact_match: bool = Field(True, description="record em_before / em_after for pairs with an answer: "
                              "whole-word containment of the normalised gold answer in the first line of the "
                              "greedy output (see forgetscope.measure.nll.answer_matches)")
    chat: bool | Literal["auto"] = Field("auto", description="apply the chat template to prompt/response pairs; "
                                         "auto: when the tokenizer has one")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "float32", description="precision of loss_before and loss_after (the same for both); auto: bfloat16 "
        "where the hardware has it")

    def effective_max_length(self, context: int | None) -> int:
        """``max_length`` checked against the model's ``context``: ``auto`` is 512 capped at it, a number
        above it is a ConfigError."""
        if self.max_length == "auto":
            return min(DEFAULT_EVAL_MAX_LENGTH, context or DEFAULT_EVAL_MAX_LENGTH)
        if context is not None and self.max_length > context:
            raise ConfigError(f"eval.max_length={self.max_length} is longer than the model's context of "
                              f"{context} tokens; use at most {context} (or auto)")
        return self.max_length


class SweepConfig(_Strict):
    model: str = Field("smollm2-135m-instruct", description="the base model: an offline alias, a .gguf file, "
                       "a local directory or a hub id")
    output: Path = Field(Path("sweeps/demo"), description="the sweep directory written (rerunning resumes it)")
    seed: int = Field(0, description="the seed of every run when seeds is null")
    seeds: list[int] | None = Field(None, description="several seeds per task, one run each; null: [seed]")
    upstream: SourceConfig = Field(SourceConfig(), description="the upstream (pretraining-like) examples "
                                   "whose forgetting is measured")
    tasks: list[TaskConfig] = Field(description="the fine-tuning tasks, one row each: a demo task's name or a "
                                    "task mapping")
    train: TrainConfig = Field(TrainConfig(), description="how each run fine-tunes")
    eval: EvalConfig = Field(EvalConfig(), description="how upstream examples are measured")
    load: LoadConfig = Field(default_factory=LoadConfig, description="how the base model's weights are loaded")
    strategy: str = Field("plain", description="the training strategy of every run: plain or a mitigation "
                          "(replay, sam, ewc, lwf, ...; see docs/mitigation.md)")
    strategy_options: dict[str, Any] = Field(default_factory=dict, description="the strategy's own options "
                                             "(checked by the strategy)")
    null_control: bool = Field(False, description="after each run, also measure a random-direction "
                               "perturbation of the same parameters with the norms of the run's update "
                               "(forgetscope.experiments.null_control): the row of generic sensitivity")
    null_rank: Literal["adapter", "full"] = Field(
        "adapter", description="LoRA runs: the null direction of each adapted weight has the adapter's rank "
        "(adapter) or full rank (full); full fine-tuning is always full rank")
    null_match: Literal["norm", "effect"] = Field(
        "norm", description="norm: the null has the norms of the run's update (a lower bound: far weaker in "
        "effect than learning); effect: the same direction scaled until its mean F on a fixed subset of "
        "upstream examples matches the run's (forgetscope.experiments.null_control.match_effect)")
    null_match_subset: int = Field(32, ge=1, description="effect: the first this many lm upstream examples")
    null_match_tol: float = Field(0.05, gt=0, lt=1, description="effect: relative tolerance on the subset's "
                                  "mean F")
    null_match_steps: int = Field(8, ge=1, le=32, description="effect: at most this many evaluations of the "
                                  "subset")
    executor: str = Field("local", description="where runs execute: a name in "
                          "forgetscope.experiments.executors.EXECUTORS (local, ray, slurm; checked by "
                          "validate_sweep)")
    slurm: dict[str, Any] = Field(default_factory=dict, description="options of the slurm executor "
                                  "(partition, time_min, gpus_per_node, ...; checked by validate_sweep)")
    report_to: str | list[str] = Field("none", description="training curves: none (default), tensorboard, "
                                       "wandb, all, or a list")

    @field_validator("report_to")
    @classmethod
    def _known_backends(cls, v: Any) -> Any:
        parse_report_to(v)
        return v

    _names_to_tasks = field_validator("tasks", mode="before")(lambda v: names_to_tasks(v))

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if not self.tasks:
            raise ValueError("tasks: at least one task is needed")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tasks: duplicate task names {dupes}")
        if self.null_match == "effect" and not self.null_control:
            raise ValueError("null_match: effect scales the null control's direction; "
                             "it needs null_control: true")
        check_load_against_train(self.load, self.train, null_control=self.null_control)
        self.upstream.check_demo_targets()
        return self

    @property
    def seed_list(self) -> list[int]:
        return self.seeds or [self.seed]


def check_load_against_train(load: LoadConfig, train: TrainConfig, *, null_control: bool = False) -> None:
    """The combinations of loading and training settings that cannot work, refused by field
    (a ValueError, turned into a one-line ConfigError by the config's validation)."""
    if load.device_map is not None and train.device != "auto":
        raise ValueError(f"train.device: {train.device!r} conflicts with load.device_map, which places the "
                         "model itself; leave train.device auto")
    if load.load_in_4bit and train.method == "full":
        raise ValueError("load.load_in_4bit: 4-bit weights cannot be trained; use train.method: lora")
    if load.load_in_4bit and null_control:
        raise ValueError("load.load_in_4bit: the null control perturbs the base weights, which 4-bit "
                         "quantization cannot hold; set null_control: false")


def _format_validation_error(exc: ValidationError, where: str, what: str = "config") -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return f"invalid {what} {where}: " + "; ".join(parts) + more


def parse_config(data: dict[str, Any], where: str = "", model: type[BaseModel] = SweepConfig,
                 what: str = "config") -> Any:
    """Validate a config mapping; a bad field becomes a ConfigError naming it."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid {what} {where}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, where, what)) from None


def load_config(path: str | Path, model: type[BaseModel] = SweepConfig, **overrides: Any) -> Any:
    """Read and validate a YAML config; ``overrides`` replace top-level fields."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1].hex()
        raise ConfigError(f"config {path} is not UTF-8 text (byte 0x{bad} at offset {exc.start}); save it as "
                          "UTF-8") from None
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {path}: expected a mapping at the top level")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_config(data, str(path), model)
