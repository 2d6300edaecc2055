"""``transformers.Trainer`` with what Crisp runs need to log: training accuracy and layer sparsity.

``CrispTrainer.log`` adds, at every training log, the training accuracy since the last log and
each layer's target and realized sparsity (collected in ``layer_rows``, saved as
``layer_sparsity.csv``). ``StateSaver`` writes Crisp's own state (adaptive ratios, running
averages, pending statistics, elapsed time) next to every checkpoint so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import Trainer, TrainerCallback

from .. import distributed
from . import results
from ..integration import CrispState

STATE_FILE = "crisp_state.json"


class CrispTrainer(Trainer):
    def __init__(self, *args, crisp_state: CrispState, **kwargs):
        super().__init__(*args, **kwargs)
        self.crisp_state = crisp_state
        self.layer_rows: list[dict] = []
        self.correct = torch.zeros((), dtype=torch.long)
        self.seen = torch.zeros((), dtype=torch.long)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")  # taken first: with label smoothing Trainer pops them from ``inputs``
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and labels is not None:
            with torch.no_grad():
                hits = (outputs["logits"].argmax(-1) == labels).sum()
            self.correct = self.correct.to(hits.device) + hits  # stays on device: no sync per step
            self.seen = self.seen.to(hits.device) + labels.numel()
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, start_time=None):
        if "loss" in logs:  # a training log: attach accuracy and layer sparsity since the last one
            self._gather_counts()
            seen = int(self.seen)
            logs["train_accuracy"] = int(self.correct) / seen if seen else float("nan")
            self.correct, self.seen = torch.zeros_like(self.correct), torch.zeros_like(self.seen)
            rows = self.crisp_state.sparsity_summary()
            for row in rows:
                self.layer_rows.append({"step": self.state.global_step, "epoch": self.state.epoch, **row})
            logs["sparsity_target"] = sum(r["target_sparsity"] for r in rows) / len(rows)
            logs["sparsity_realized"] = sum(r["realized_sparsity"] for r in rows) / len(rows)
            self.crisp_state.reset_stats()
        super().log(logs, start_time)

    def _gather_counts(self) -> None:
        """Data parallel: sum accuracy and sparsity counts over ranks, and check that all ranks use the same ratios."""
        if not distributed.active():
            return
        s = self.crisp_state
        s.fold_compiled_counts()  # a compiled model counts in a tensor: sum those too
        distributed.check_same_across_ranks(s.controller.ratios, "adaptive per-layer sparsity ratios")
        n = s.n_layers
        local = torch.tensor([float(v) for v in (*s.kept, *s.real)] + [float(self.correct), float(self.seen)],
                             dtype=torch.float64)
        total = distributed.sum_across_ranks(local)
        s.kept, s.real = total[:n].tolist(), total[n:2 * n].tolist()
        self.correct = torch.tensor(int(total[-2].round()))
        self.seen = torch.tensor(int(total[-1].round()))


class StateSaver(TrainerCallback):
    """Saves and restores Crisp's run state beside Trainer's checkpoints."""

    def __init__(self, crisp_state: CrispState):
        self.crisp_state = crisp_state
        self.trainer: CrispTrainer | None = None
        self.elapsed_before = 0.0
        self.started = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        if self.trainer is None or not state.is_world_process_zero:
            return
        s = self.crisp_state
        s.fold_compiled_counts()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        results.write_json(folder / STATE_FILE, {
            "controller": s.controller.state_dict(),
            "kept": [float(v) for v in s.kept],
            "real": [float(v) for v in s.real],
            "ratio_sum": s.ratio_sum,
            "forwards": s.forwards,
            "layer_rows": self.trainer.layer_rows,
            "correct": int(self.trainer.correct),
            "seen": int(self.trainer.seen),
            "elapsed": self.elapsed_before + time.perf_counter() - self.started,
        })
        # Only now is the new checkpoint whole (the state file comes last): drop the older ones. Trainer's own
        # save_total_limit rotates before on_save, which would leave a state-less checkpoint as the only one.
        for old in Path(args.output_dir).glob("checkpoint-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, checkpoint: Path, trainer: CrispTrainer) -> None:
        """Load what ``on_save`` wrote into ``checkpoint`` (before ``trainer.train(resume_from_checkpoint=...)``)."""
        self.trainer = trainer
        path = Path(checkpoint) / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint has no Crisp state; delete {checkpoint.parent} to start the run afresh")
        saved = results.read_json(path)
        s = self.crisp_state
        s.controller.load_state_dict(saved["controller"])
        s.kept, s.real = list(saved["kept"]), list(saved["real"])
        s.ratio_sum, s.forwards = list(saved["ratio_sum"]), list(saved["forwards"])
        trainer.layer_rows = list(saved["layer_rows"])
        trainer.correct = torch.tensor(saved["correct"])
        trainer.seen = torch.tensor(saved["seen"])
        self.elapsed_before = float(saved["elapsed"])
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()


def history_frame(log_history: list[dict]) -> pd.DataFrame:
    """Training and evaluation logs as one table: a row per log, NaN where a value was not logged."""
    columns = ["step", "epoch", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "learning_rate",
               "grad_norm", "sparsity_target", "sparsity_realized"]
    rows = []
    for entry in log_history:
        if "loss" in entry or "eval_loss" in entry:
            row = {**entry}
            if "loss" in row:
                row["train_loss"] = row.pop("loss")
            rows.append({c: row.get(c, float("nan")) for c in columns})
    return pd.DataFrame(rows, columns=columns)
