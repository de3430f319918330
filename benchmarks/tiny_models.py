"""Tiny models trained inside Lightning, Hugging Face ``Trainer`` and Keras, seeded, on random data.

The framework tests (``tests/test_frameworks_*.py``, ``tests/test_keras.py``) and the
framework benchmarks (:mod:`benchmarks.frameworks`, :mod:`benchmarks.keras_callback`)
train the same models: the tests compare what a run
logged with the stock writer's run, the benchmark times its steps. Built from configs
(no hub download: ``HF_HUB_OFFLINE=1``), small enough that a step costs about a
millisecond on one CPU thread, so what the logging costs is what shows.

Each framework is imported when its function is first called: importing this module
imports neither (it sets ``HF_HUB_OFFLINE=1`` unless set, so transformers, imported
after it, never tries the hub).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["hf_trainer", "keras_data", "keras_model", "lightning_fit", "lightning_module"]

# No hub access, ever: set before transformers is imported (it reads it then).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Features and hidden units of the Lightning regression; tokens and width of the BERT.
FEATURES, HIDDEN, BATCH = 16, 32, 8
VOCAB, TOKENS, WIDTH = 64, 16, 16


@functools.cache
def _regression_class() -> type:
    import lightning.pytorch as pl
    import torch

    class Regression(pl.LightningModule):
        """y = sum(x) by a two-layer MLP; logs ``train/loss`` every step, ``val/loss``."""

        def __init__(self, lr: float = 0.01, hidden: int = HIDDEN) -> None:
            super().__init__()
            self.save_hyperparameters()  # the logger's hparams
            self.net = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
            )
            self.example_input_array = torch.zeros(2, FEATURES)  # log_graph=True traces it

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val/loss", torch.nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    return Regression


def lightning_module() -> Any:
    """A fresh ``Regression`` LightningModule (seed first for equal runs)."""
    return _regression_class()()


def lightning_fit(
    logger: Any, steps: int, *, callbacks: Sequence[Any] = (), validate: bool = True
) -> Any:
    """Train ``Regression`` for one epoch of ``steps`` steps, logging every step.

    ``log_every_n_steps=1``: Lightning calls ``logger.log_metrics`` and then
    ``logger.save()`` (the writer's ``flush()``) after every step. With ``validate``,
    a validation pass of 2 batches runs at the end of the epoch. Returns the trainer.
    """
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    pl.seed_everything(0, verbose=False)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH, FEATURES, generator=generator)
    y = x.sum(1, keepdim=True)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=logger,
        log_every_n_steps=1,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        limit_val_batches=2 if validate else 0,
        num_sanity_val_steps=0,
    )
    trainer.fit(
        lightning_module(),
        DataLoader(TensorDataset(x, y), batch_size=BATCH),
        DataLoader(TensorDataset(x[: 2 * BATCH], y[: 2 * BATCH]), batch_size=BATCH),
    )
    return trainer


@functools.cache
def _random_tokens_class() -> type:
    import torch

    class RandomTokens(torch.utils.data.Dataset):  # type: ignore[misc]
        """``n`` rows of random token ids; label: parity of their sum (seeded)."""

        def __init__(self, n: int) -> None:
            generator = torch.Generator().manual_seed(0)
            self.x = torch.randint(0, VOCAB, (n, TOKENS), generator=generator)
            self.y = self.x.sum(1) % 2

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.x[i], "labels": self.y[i]}

    return RandomTokens


def hf_trainer(
    output_dir: str,
    callbacks: Sequence[Any],
    steps: int,
    *,
    report_to: str | list[str] = "none",
    eval_steps: int | None = None,
    **arguments: Any,
) -> Any:
    """A ``Trainer`` of a one-layer BERT classifier for ``steps`` steps, logging every step.

    ``logging_steps=1``: the TensorBoard callback's ``on_log`` (a ``flush()`` in the
    stock one) runs after every step. ``eval_steps``: evaluate (8 rows) every that many
    steps; None: no evaluation during training. ``arguments`` go to
    ``TrainingArguments``. Call ``.train()`` (and ``.evaluate()``) on it.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * WIDTH,
        max_position_embeddings=TOKENS,
        num_labels=2,
    )
    evaluation: dict[str, Any] = (
        {"eval_strategy": "steps", "eval_steps": eval_steps} if eval_steps else {}
    )
    tokens = _random_tokens_class()
    return Trainer(
        model=BertForSequenceClassification(config),
        args=TrainingArguments(
            output_dir=output_dir,
            max_steps=steps,
            logging_steps=1,
            per_device_train_batch_size=BATCH,
            report_to=report_to,
            save_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
            seed=0,
            **evaluation,
            **arguments,
        ),
        train_dataset=tokens(steps * BATCH),
        eval_dataset=tokens(BATCH),
        callbacks=list(callbacks),
    )


#: Keras: rows of random data, and the regression's input (steps of a 1-D signal).
KERAS_ROWS, KERAS_STEPS, KERAS_CHANNELS = 96, 6, 3


def keras_model(seed: int = 0) -> Any:
    """A compiled Keras regression on the current backend: Conv1D, Dense, Dense.

    One weight of each shape Keras's ``TensorBoard`` turns into an image its own way
    (a 3-D kernel, 2-D kernels, 1-D biases); SGD, MSE loss and an MAE metric, so each
    batch logs two values. Seeded, and Keras's name counters reset: two models built
    alike train alike, under the same layer names (tags).
    """
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((KERAS_STEPS, KERAS_CHANNELS)),
            keras.layers.Conv1D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(HIDDEN // 4, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse", metrics=["mae"])
    return model


def keras_data(rows: int = KERAS_ROWS, seed: int = 0) -> tuple[Any, Any]:
    """(x, y): ``rows`` random signals and the sum of each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((rows, KERAS_STEPS, KERAS_CHANNELS), dtype=np.float32)
    return x, x.sum(axis=(1, 2))[:, None]
