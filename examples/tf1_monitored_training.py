"""TF1-style training with ``AsyncSummarySaverHook``: a drop-in for ``SummarySaverHook``.

Linear regression on synthetic data, trained with ``MonitoredTrainingSession``; the hook
saves 8 scalar and 2 histogram summaries. The training thread only fetches them and
queues their serialized bytes; a background loop writes the event file.

    python examples/tf1_monitored_training.py --steps 500
    tensorboard --logdir runs/
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from asyncsummary import AsyncSummarySaverHook, SummaryWriterCache  # noqa: E402

v1 = tf.compat.v1
TRUE_WEIGHTS = np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)
TRUE_BIAS = 0.7


def build_model(batch: int = 64, seed: int = 0) -> tuple[tf.Operation, tf.Tensor, tf.Tensor]:
    """The graph: data, model, 10 summaries, train op. Returns (train_op, loss, summaries)."""
    rng = np.random.default_rng(seed)
    x_all = rng.normal(size=(4096, 4)).astype(np.float32)
    y_all = (x_all @ TRUE_WEIGHTS + TRUE_BIAS + 0.1 * rng.normal(size=(4096, 1))).astype(np.float32)
    dataset = (
        tf.data.Dataset.from_tensor_slices((x_all, y_all))
        .shuffle(4096, seed=seed)
        .repeat()
        .batch(batch)
    )
    x, y = v1.data.make_one_shot_iterator(dataset).get_next()

    global_step = v1.train.get_or_create_global_step()
    w = v1.get_variable("w", [4, 1], initializer=v1.zeros_initializer())
    b = v1.get_variable("b", [], initializer=v1.zeros_initializer())
    residual = tf.matmul(x, w) + b - y
    loss = tf.reduce_mean(tf.square(residual))
    optimizer = v1.train.GradientDescentOptimizer(0.05)
    grads_and_vars = optimizer.compute_gradients(loss)

    v1.summary.scalar("loss", loss)
    v1.summary.scalar("mae", tf.reduce_mean(tf.abs(residual)))
    for i in range(4):
        v1.summary.scalar(f"w_{i}", w[i, 0])
    v1.summary.scalar("bias", b)
    v1.summary.scalar("grad_norm", tf.linalg.global_norm([g for g, _ in grads_and_vars]))
    v1.summary.histogram("weights", w)
    v1.summary.histogram("residuals", residual)

    # The train op reads the global step before incrementing it, so the hook may skip
    # its extra exact-step read (exact_step=False) and still write the exact step.
    with tf.control_dependencies([AsyncSummarySaverHook.global_step_read()]):
        train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    return train_op, loss, v1.summary.merge_all()


def train(logdir: str, steps: int = 300, save_steps: int = 1) -> float:
    """Train ``steps`` steps, saving summaries to ``logdir``; returns the final loss."""
    with tf.Graph().as_default():
        train_op, loss, summaries = build_model()
        hook = AsyncSummarySaverHook(
            save_steps=save_steps,
            output_dir=logdir,
            summary_op=summaries,
            exact_step=False,  # exact here: see build_model()
            flush_secs=2.0,  # a killed job loses at most ~2 s of summaries
        )
        last = float("nan")
        with v1.train.MonitoredTrainingSession(hooks=[hook], log_step_count_steps=None) as session:
            for _ in range(steps):
                _, last = session.run([train_op, loss])
        # Leaving the session ran hook.end(): every summary is in the event file now.
    SummaryWriterCache.clear()  # close the shared writer (exit would do it too)
    return float(last)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--logdir", default=os.path.join("runs", time.strftime("tf1-%Y%m%d-%H%M%S"))
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--save-steps", type=int, default=1)
    args = parser.parse_args(argv)

    loss = train(args.logdir, args.steps, args.save_steps)
    files = sorted(f for f in os.listdir(args.logdir) if "tfevents" in f)
    print(f"trained {args.steps} steps, final loss {loss:.4f}")
    print(f"events written to {os.path.abspath(args.logdir)}: {', '.join(files)}")
    print(f"open them with:  tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
