"""Per-epoch logs: CSV (``log.csv``) and JSON lines (``log.jsonl``) written by rank 0, optionally TensorBoard.
On resume, rows of epochs after the checkpoint's epoch are dropped so that no epoch appears twice."""
from __future__ import annotations

import csv
import json
import os
import warnings


class EpochLogger:
    def __init__(self, out_dir: str, enabled: bool = True, tensorboard: bool = False):
        self.enabled = enabled
        self.csv_path = os.path.join(out_dir, "log.csv")
        self.json_path = os.path.join(out_dir, "log.jsonl")
        self.tb = None
        self.history: list[dict] = []
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except Exception as e:  # tensorboard not installed
                warnings.warn(f"train.tensorboard: TensorBoard unavailable ({e}); logging CSV/JSON only")

    def rows(self) -> list[dict]:
        if not os.path.isfile(self.json_path):
            return []
        with open(self.json_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the log files by ``rows`` (resume: the checkpoint's history is the source of truth, so a
        row written after the checkpoint, or missing because of a crash, is dropped or restored)."""
        if not self.enabled:
            return
        for p in (self.csv_path, self.json_path):
            if os.path.exists(p):
                os.remove(p)
        for r in rows:
            self._append(r)

    def _append(self, row: dict) -> None:
        with open(self.json_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        new = not os.path.isfile(self.csv_path)
        if new:
            fields = list(row)
        else:
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                fields = next(csv.reader(f))
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def log(self, row: dict) -> None:
        self.history.append(dict(row))
        if not self.enabled:
            return
        self._append(row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
