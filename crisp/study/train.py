"""Fine-tune one configuration with one seed, and write its run folder (see :mod:`crisp.study.results`).

A thin layer over ``transformers.Trainer``. Defaults are the paper's (Section 3.4): AdamW, lr 2e-5,
batch 16 x 4 gradient accumulation (64 per optimizer step), 3 epochs, max length 512; plus dynamic
padding and length grouping (the paper does not say; ``paper_padding`` restores pad-to-512).
Where the paper is silent we keep transformers' defaults: linear decay to 0, no warmup, weight
decay 0, gradient clipping at 1.0, dropout as in the checkpoint.

Traps avoided (see PITFALLS.md): ``model.accepts_loss_kwargs = False`` so Trainer divides the loss
by the accumulation steps; predictions are made by our own ordered loop keyed by ``idx``, never
by position in ``predict()`` output, which length grouping reorders.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import data as data_mod
from .. import distributed
from . import models, recipe, results
from ..configs import CONFIGS, get_config
from ..integration import enable
from .subsets import SUBSET_KINDS, subset

# Protocols: named presets. A run records its protocol's name; changing a preset's values by hand adds a tag per
# difference to the name ("small-n200-b64", crisp.study.recipe), so runs of different recipes never share a folder.
PROTOCOLS = {
    "full": {},  # the paper's recipe on all 67,349 training sentences
    # Quick check: a fixed 4,000-sentence subset, 1 epoch, batch 16 x 1 (250 optimizer steps). With the paper's
    # 16 x 4 it would take 63 steps, and MiniLM then stayed at chance (51% dev accuracy in all 8 runs we tried).
    "small": {"train_size": 4000, "epochs": 1.0, "grad_accum": 1, "logging_steps": 25},
    # Data-size sweep (does sparsity regularize where overfitting is real?): nested stratified subsets fixed by the
    # data seed (crisp.study.subsets), the paper's optimizer and 64 sentences per step. The rule for the length: at least
    # 5 epochs and at least 320 optimizer steps, so that the dense baseline has time to overfit: 40 epochs at 500
    # sentences (320 steps), 10 at 2,000 (320 steps), 5 at 8,000 (625 steps). (A first n500 run with 10 epochs,
    # 80 steps, was still learning at the end: train accuracy 0.80, dev loss still falling; it was not kept.)
    # Dev is evaluated every epoch; the final epoch is reported, never the best.
    "n500": {"train_size": 500, "subset": "stratified", "epochs": 40.0, "batch_size": 64, "grad_accum": 1,
             "logging_steps": 16},
    "n2000": {"train_size": 2000, "subset": "stratified", "epochs": 10.0, "batch_size": 64, "grad_accum": 1,
              "logging_steps": 16},
    "n8000": {"train_size": 8000, "subset": "stratified", "epochs": 5.0, "batch_size": 64, "grad_accum": 1,
              "logging_steps": 25},
}
SIZE_PROTOCOLS = ("n500", "n2000", "n8000")
SIZE_RULE = {"min_epochs": 5, "min_steps": 320}  # the sweep's length rule (above), checked by the tests
# Standard regularizers, as configurations of the same trainer: dense attention (the baseline's CrispConfig, through
# the same code path) with one knob changed. They answer whether Crisp does more than the regularizers people already
# use. attn_dropout makes the paper's "structured dropout" analogy literal: dropout on attention probabilities raised
# from the checkpoint's 0.1 to 0.3. label_smoothing: targets (1 - 0.1) on the label, 0.1 spread over both classes.
REGULARIZERS = {
    "attn_dropout": {"attention_dropout": 0.3},
    "label_smoothing": {"label_smoothing": 0.1},
}
KNOB_TAGS = {"attention_dropout": "attndrop", "label_smoothing": "ls"}  # a knob off its configuration's value: label
TRAIN_CONFIGS = (*CONFIGS, *REGULARIZERS)  # every configuration a run can name


def crisp_config_of(config: str, **overrides):
    """The attention rule of a run's configuration: a paper configuration, or dense for a regularizer."""
    if config in REGULARIZERS:
        return get_config("baseline", **overrides).replace(name=config)
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration {config!r}; choose one of {', '.join(TRAIN_CONFIGS)}")
    return get_config(config, **overrides)


def knob_values(config: str) -> dict:
    """The regularizer knobs a configuration implies (None: the checkpoint's attention dropout; 0: no smoothing)."""
    return {"attention_dropout": None, "label_smoothing": 0.0, **REGULARIZERS.get(config, {})}


# Numerical precision of a run. Not part of the recipe (the protocol's name stays), but part of the run's identity:
# a run folder's label carries it (baseline-bf16) and the book never pairs runs of different precisions or devices.
PRECISIONS = {
    "fp32": "float32 throughout (TF32 matmuls switched off on CUDA); every committed CPU run",
    "tf32": "float32 weights, CUDA matmuls in TF32 (Ampere or newer)",
    "bf16": "float32 master weights, bfloat16 autocast (CUDA, or CPU)",
    "fp16": "float32 master weights, float16 autocast with loss scaling (CUDA only)",
}


def _opt(default, help: str):
    """A dataclass field whose help text the CLI shows."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a run needs. Saved whole in ``metrics.json``."""

    model: str = _opt("minilm", 'minilm / distilbert (the paper\'s, from the hub) / tiny-distilbert / tiny-bert, a hub id or a checkpoint folder')
    config: str = _opt("baseline", 'baseline | uniform_sparse | light_sparse | aggressive_sparse | attn_dropout | label_smoothing')
    granularity: str = _opt("row", 'row: top-k per query row; head: percentile per (batch, head)')
    paper_padding: bool = _opt(False, 'pad every sentence to max_length and let padding compete in the top-k')
    seed: int = _opt(0, 'model head init, dropout and data order (the grids use 0-4)')
    data: str | None = _opt(None, 'SST-2 folder (GLUE layout); None: $CRISP_SST2_DIR, else the hub')
    output: str = _opt(str(results.DEFAULT_ROOT), 'runs go to <output>/<model>/<protocol>/<config>/seed-<n>/')
    protocol: str = _opt("full", 'preset: full (paper recipe, all data) or small (4,000 sentences, 1 epoch, batch 16x1)')
    train_size: int | None = _opt(None, 'None: the whole training split; N: a fixed subset of N sentences')
    subset: str = _opt("random", 'how a train_size subset is drawn: random, or stratified (by label, nested across sizes)')
    data_seed: int = _opt(0, 'seed of the training subset (independent of the model seed: every run sees the same one)')
    epochs: float = _opt(3.0, 'passes over the training set (paper: 3)')
    learning_rate: float = _opt(2e-5, 'AdamW learning rate (paper: 2e-5), linear decay to 0')
    batch_size: int = _opt(16, 'sentences per micro-batch (paper: 16)')
    grad_accum: int = _opt(4, 'micro-batches per optimizer step (paper: 4)')
    precision: str = _opt("fp32", 'fp32 | tf32 | bf16 | fp16 (autocast; tf32 and fp16 need CUDA)')
    max_length: int = _opt(512, 'truncation (and padding, with paper_padding)')
    weight_decay: float = _opt(0.0, 'AdamW weight decay (paper: not stated)')
    warmup_steps: int = _opt(0, 'linear warmup steps (paper: not stated)')
    max_grad_norm: float = _opt(1.0, 'gradient clipping norm (transformers default)')
    eval_batch_size: int = _opt(64, 'batch size for evaluation and prediction')
    group_by_length: bool = _opt(True, 'batches of similar length (less padding)')
    logging_steps: int = _opt(50, 'optimizer steps between training logs (loss, accuracy, layer sparsity)')
    save_steps: int = _opt(200, 'optimizer steps between checkpoints (resume after a crash)')
    attention_dropout: float | None = _opt(None, "dropout on attention probabilities; None: the configuration's (attn_dropout: 0.3), else the checkpoint's")
    label_smoothing: float | None = _opt(None, "label smoothing factor; None: the configuration's (label_smoothing: 0.1), else 0")
    overwrite: bool = _opt(False, 'replace a finished run instead of refusing')
    progress: bool = _opt(True, 'progress bars')

    def __post_init__(self):
        if isinstance(self.config, str):
            for knob, value in knob_values(self.config).items():
                if getattr(self, knob) is None:
                    setattr(self, knob, value)
        self.validate()

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("bool",) and not isinstance(value, bool):
                raise ValueError(f"{field.name} must be True or False, got {value!r}")
            if field.type.startswith("str") and not (isinstance(value, str) or (value is None and "None" in field.type)):
                raise ValueError(f"{field.name} must be a string, got {value!r}")
        if not isinstance(self.config, str) or self.config not in TRAIN_CONFIGS:
            raise ValueError(f"unknown configuration {self.config!r}; choose one of {', '.join(TRAIN_CONFIGS)}")
        crisp_config_of(self.config, granularity=self.granularity)
        for knob, top in (("attention_dropout", 1.0), ("label_smoothing", 1.0)):
            value = getattr(self, knob)
            if value is None and knob == "attention_dropout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < top:
                raise ValueError(f"{knob} must be a number in [0, 1), got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if recipe.preset_of(self.protocol) not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        for name in ("batch_size", "grad_accum", "max_length", "eval_batch_size", "logging_steps", "save_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.subset not in SUBSET_KINDS:
            raise ValueError(f"subset must be one of {', '.join(SUBSET_KINDS)}, got {self.subset!r}")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ValueError(f"data_seed must be a non-negative integer, got {self.data_seed!r}")
        if self.train_size is not None and (isinstance(self.train_size, bool) or not isinstance(self.train_size, int) or self.train_size < 1):
            raise ValueError(f"train_size must be a positive integer or None, got {self.train_size!r}")
        for name in ("epochs", "learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        named = recipe.protocol_name(recipe.preset_of(self.protocol), dataclasses.asdict(self), _launched_world_size())
        if self.protocol != named:  # the folder's name must be the recipe (crisp.study.recipe)
            raise ValueError(f"protocol {self.protocol!r} does not name this recipe, which is {named!r}; "
                             f"build the configuration with crisp.study.train.make_config")

    @property
    def label(self) -> str:
        """Folder name of the configuration: the paper's name, plus any departure from its defaults."""
        knobs = "".join(f"-{KNOB_TAGS[k]}{getattr(self, k):g}" for k, v in knob_values(self.config).items()
                        if getattr(self, k) != v)
        return (self.config + ("-head" if self.granularity == "head" else "") + ("-paperpad" if self.paper_padding else "")
                + knobs + ("" if self.precision == "fp32" else f"-{self.precision}"))

    @property
    def folder(self) -> Path:
        return results.run_dir(self.output, models.short_name(self.model), self.protocol, self.label, self.seed)


def _launched_world_size() -> int:
    """Processes of a data-parallel launch (torchrun and accelerate set ``WORLD_SIZE``), else 1."""
    value = os.environ.get("WORLD_SIZE", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def make_config(protocol: str = "full", **overrides) -> TrainConfig:
    """A :class:`TrainConfig` for a protocol preset; overrides that change the preset rename the protocol."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    settings = {**PROTOCOLS[protocol], **overrides}
    # The name is the recipe (crisp.study.recipe): the preset plus a tag per difference. How the sentences of one optimizer
    # step are split into micro-batches is not part of it: 64 x 1 takes the same optimizer steps on the same 64
    # sentences as the paper's 16 x 4 (the logged loss is a mean either way, see accepts_loss_kwargs below); under
    # torchrun / accelerate launch each of WORLD_SIZE processes takes batch_size x grad_accum sentences.
    try:
        name = recipe.protocol_name(protocol, settings, _launched_world_size())
    except (TypeError, ValueError):  # a value of the wrong type: TrainConfig names it
        name = protocol
    return TrainConfig(**{**settings, "protocol": name})


# --- datasets -----------------------------------------------------------------------------------


class Encoded(torch.utils.data.Dataset):
    """Tokenized sentences with labels; items are dicts the collator pads."""

    def __init__(self, split: data_mod.Split, tokenizer, max_length: int, indices=None):
        self.indices = list(range(len(split))) if indices is None else list(indices)
        sentences = [split.sentences[i] for i in self.indices]
        enc = tokenizer(sentences, truncation=True, max_length=max_length)
        self.items = [
            {"input_ids": ids, "attention_mask": mask, "labels": split.labels[i]}
            for ids, mask, i in zip(enc["input_ids"], enc["attention_mask"], self.indices)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _collator(tokenizer, cfg: TrainConfig):
    from transformers import DataCollatorWithPadding

    if cfg.paper_padding:
        return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=cfg.max_length)
    return DataCollatorWithPadding(tokenizer, padding="longest")


@torch.no_grad()
def predict(model, dataset: Encoded, collate, batch_size: int, progress: bool = False, desc: str = "predict",
            precision: str = "fp32"):
    """Per-sentence predictions in file order: ``(DataFrame idx,label,pred,prob_pos, mean loss)``.

    ``precision`` ``bf16``/``fp16`` runs the forward under the same autocast as training."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(dataset)), key=lambda i: len(dataset[i]["input_ids"]))  # little padding
    rows, loss_sum = [], 0.0
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = order[start:start + batch_size]
        batch = collate([dataset[i] for i in chunk])
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            logits = model(**batch).logits.float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
        prob = logits.softmax(-1)[:, 1].cpu().tolist()
        for i, p, y, yhat in zip(chunk, prob, batch["labels"].cpu().tolist(), logits.argmax(-1).cpu().tolist()):
            rows.append({"idx": dataset.indices[i], "label": y, "pred": yhat, "prob_pos": p})
    model.train(was_training)
    frame = pd.DataFrame(rows).sort_values("idx").reset_index(drop=True)
    return frame, loss_sum / max(len(frame), 1)


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32 and tf32)."""
    import contextlib

    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def silence_progress_bars() -> None:
    """No progress bar from transformers (weight loading, saving) or the hub (downloads), for ``progress=False``."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def check_precision(precision: str) -> None:
    """Refuse a precision this machine cannot run, naming what is missing (before anything touches disk)."""
    if precision in ("tf32", "fp16") and not torch.cuda.is_available():
        raise ValueError(f"precision {precision} needs a CUDA device and torch sees none; use fp32 or bf16 on CPU")
    if precision == "tf32" and torch.cuda.get_device_capability()[0] < 8:
        raise ValueError(f"precision tf32 needs an Ampere or newer GPU; {torch.cuda.get_device_name()} is not")
    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16 is not supported on {torch.cuda.get_device_name()}; use fp16 or fp32")


# --- the run ------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> Path:
    """Run ``cfg`` to the end and return its run folder; resumes from a checkpoint if one is there."""
    from transformers import TrainingArguments, set_seed

    from .trainer import CrispTrainer, StateSaver, history_frame

    cfg.validate()
    check_precision(cfg.precision)
    crisp_config = crisp_config_of(cfg.config, granularity=cfg.granularity, paper_padding=cfg.paper_padding)
    folder = cfg.folder
    if results.is_finished(folder) and not cfg.overwrite:
        raise results.RunExistsError(f"{folder} holds a finished run; pass --overwrite to replace it, or another --output / --seed")
    models.resolve(cfg.model)  # an unknown name fails now (offline: before any network call), not after the data
    results.check_creatable(folder)  # and an unwritable output before the model loads
    if not cfg.progress:
        silence_progress_bars()
    splits = data_mod.load_sst2(cfg.data)  # data and model errors come before anything touches disk
    set_seed(cfg.seed)
    model, tokenizer = models.load(cfg.model, seed=cfg.seed, attention_dropout=cfg.attention_dropout)
    results.check_writable(folder)
    if results.is_finished(folder) and distributed.is_main():  # overwrite: the old run goes once the new one starts
        (folder / "metrics.json").unlink()

    model.accepts_loss_kwargs = False  # Trainer then averages the loss over accumulation steps
    state = enable(model, crisp_config)

    indices = subset(splits["train"].labels, cfg.train_size, cfg.subset, cfg.data_seed)
    train_set = Encoded(splits["train"], tokenizer, cfg.max_length, indices)
    dev_set = Encoded(splits["dev"], tokenizer, cfg.max_length)
    test_set = Encoded(splits["test"], tokenizer, cfg.max_length) if "test" in splits else None
    collate = _collator(tokenizer, cfg)

    checkpoints = folder / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints),
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch",
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # StateSaver keeps one: it drops the older only once the new one is whole
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        label_smoothing_factor=cfg.label_smoothing,  # training loss only; predictions report plain NLL
        report_to=[],
        disable_tqdm=not cfg.progress or not distributed.is_main(),  # under torchrun: progress bars from process 0 only
        ddp_find_unused_parameters=False,  # every parameter of these classifiers gets a gradient each step (checked in
        # tests/test_distributed.py); True would cost a graph traversal per step and make DDP warn
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        restore_callback_states_from_checkpoint=True,
        bf16=cfg.precision == "bf16",
        # Trainer's way to allow CPU bf16 autocast and multi-process CPU (gloo) data parallelism; a plain CPU run keeps
        # the path of the committed runs
        use_cpu=not torch.cuda.is_available() and (cfg.precision == "bf16" or _launched_world_size() > 1),
        fp16=cfg.precision == "fp16",
        tf32=(cfg.precision == "tf32") if torch.cuda.is_available() else None,  # fp32 on CUDA: TF32 explicitly off
    )
    saver = StateSaver(state)
    trainer = CrispTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=dev_set,
        data_collator=collate,
        compute_metrics=_accuracy,
        crisp_state=state,
        callbacks=[saver],
    )
    saver.trainer = trainer
    resume = _last_checkpoint(checkpoints)
    for partial in checkpoints.glob("checkpoint-*") if checkpoints.is_dir() else []:
        if resume is None or partial != resume and not (partial / "crisp_state.json").is_file():
            shutil.rmtree(partial, ignore_errors=True)  # half-written by a killed run
    if resume is not None:
        saver.restore(resume, trainer)
        if distributed.is_main():
            print(f"resuming from step {resume.name.split('-')[-1]} ({resume})", flush=True)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = saver.elapsed_before + time.perf_counter() - started
    world = distributed.world_size()
    if not trainer.layer_rows and distributed.is_main():
        print(f"warning: {trainer.state.global_step} optimizer step(s), fewer than logging_steps={cfg.logging_steps}: "
              f"nothing was logged during training, so layer_sparsity.csv is empty and realized_sparsity_train is null "
              f"(lower --logging-steps to log)", file=sys.stderr, flush=True)
    if not distributed.is_main():  # data parallel: rank 0 evaluates and writes every file; the others wait for it
        distributed.barrier()
        return folder

    # Final evaluation: dev with attention statistics, then the held-out test split, once.
    state.reset_stats()
    state.record_entropy = True
    dev_pred, dev_loss = predict(model, dev_set, collate, cfg.eval_batch_size, cfg.progress, "dev", cfg.precision)
    state.record_entropy = False
    dev_sparsity = state.sparsity_summary()
    attention_stats = pd.DataFrame(state.entropy_summary())
    test_pred, test_loss = (predict(model, test_set, collate, cfg.eval_batch_size, cfg.progress, "test", cfg.precision)
                            if test_set is not None else (None, None))

    history = history_frame(trainer.state.log_history)
    layer_sparsity = pd.DataFrame(trainer.layer_rows)
    for name, frame in (("history.csv", history), ("layer_sparsity.csv", layer_sparsity),
                        ("attention_stats.csv", attention_stats), ("predictions_dev.csv", dev_pred)):
        results.write_csv(folder / name, frame)
    if test_pred is not None:
        results.write_csv(folder / "predictions_test.csv", test_pred)

    metrics = {
        "model": models.short_name(cfg.model),
        "model_source": cfg.model,
        "protocol": cfg.protocol,
        "config": cfg.label,
        "paper_config": cfg.config,
        "seed": cfg.seed,
        "train_size": len(train_set),
        "epochs": cfg.epochs,
        "optimizer_steps": trainer.state.global_step,
        "step_batch": f"{cfg.batch_size} x {cfg.grad_accum}" + (f" x {world} processes" if world > 1 else ""),
        "world_size": world,
        "precision": cfg.precision,  # micro-batch x accumulation (the recipe fixes only the product)
        "attention_dropout": _attention_dropout(model),  # as the model applied it (None if it has no such setting)
        "label_smoothing": cfg.label_smoothing,
        "dev_accuracy": float((dev_pred["pred"] == dev_pred["label"]).mean()),
        "dev_loss": dev_loss,
        "test_accuracy": float((test_pred["pred"] == test_pred["label"]).mean()) if test_pred is not None else None,
        "test_loss": test_loss,
        "dev_size": len(dev_pred),
        "test_size": len(test_pred) if test_pred is not None else 0,
        "target_sparsity": crisp_config.sparsity,
        "realized_sparsity_dev": float(np.nanmean([r["realized_sparsity"] for r in dev_sparsity])),
        "realized_sparsity_train": float(layer_sparsity["realized_sparsity"].mean()) if len(layer_sparsity) else None,
        "layer_ratio_final": list(state.controller.ratios),
        "layer_realized_sparsity_dev": [r["realized_sparsity"] for r in dev_sparsity],
        "train_seconds": train_seconds,
        "data_source": data_mod.resolve_source(cfg.data),
        "crisp_config": crisp_config.to_dict(),
        "train_config": dataclasses.asdict(cfg),
        "git_commit": results.git_commit(),
        **results.environment(),
    }
    results.write_json(folder / "metrics.json", metrics)  # last: its presence marks the run finished
    shutil.rmtree(checkpoints, ignore_errors=True)
    distributed.barrier()
    return folder


def _attention_dropout(model):
    try:
        return float(getattr(model.config, models.attention_dropout_key(model.config)))
    except models.ModelError:
        return None


def _accuracy(eval_pred) -> dict:
    logits, labels = eval_pred
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def _last_checkpoint(folder: Path):
    """The newest checkpoint that was completely written (Crisp's state file is written last)."""
    from .trainer import STATE_FILE

    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / STATE_FILE).is_file() and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None
