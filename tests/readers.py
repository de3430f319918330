"""Real readers of event files, shared by the tests.

Every test reads what a writer produced through the readers users rely on:
TensorBoard's loaders (``EventFileLoader``, ``EventAccumulator``), TensorFlow's
``summary_iterator`` and ``tf.data.TFRecordDataset`` (which checks every CRC).
TensorFlow is imported only inside the functions that need it.
"""

from __future__ import annotations

import glob
import os
from typing import Any


def event_files(logdir: str) -> list[str]:
    """The event files of one run folder, in the order TensorBoard reads them."""
    return sorted(glob.glob(os.path.join(logdir, "*tfevents*")))


#: False in the core suite (``ASYNCSUMMARY_CORE_SUITE=1``, no TensorFlow installed): a
#: test that reads back with TensorBoard then cross-checks with TF does only the first.
TF_CROSS_CHECKS = os.environ.get("ASYNCSUMMARY_CORE_SUITE") != "1"


def tb_records(path: str) -> list[bytes]:
    """Every record's payload through TensorBoard's ``RawEventFileLoader``, which
    checks each CRC and stops at the first bad or truncated record."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    return list(RawEventFileLoader(path).Load())


def tb_events(path: str) -> list[Any]:
    """All events of one file, as stored, through TensorBoard's ``RawEventFileLoader``
    (TensorBoard's record reader; no data migration, so events compare as written)."""
    from tensorboard.compat.proto import event_pb2

    return [event_pb2.Event.FromString(r) for r in tb_records(path)]


def tb_run_events(logdir: str) -> list[Any]:
    """Events of every file of a run, files in name order."""
    out: list[Any] = []
    for path in event_files(logdir):
        out.extend(tb_events(path))
    return out


def scalars(logdir: str) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every simple_value in a run, in file order."""
    out = []
    for event in tb_run_events(logdir):
        if event.HasField("summary"):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.append((event.step, value.tag, value.simple_value))
    return out


def accumulator(logdir: str) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def tf_summary_iterator(path: str) -> list[Any]:
    import tensorflow as tf

    return list(tf.compat.v1.train.summary_iterator(path))


def tf_records(path: str) -> list[bytes]:
    """Raw records through ``tf.data.TFRecordDataset``, which verifies every CRC."""
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def without_wall_time(events: list[Any]) -> list[bytes]:
    """Events serialized with wall_time cleared, for stream comparisons."""
    out = []
    for event in events:
        copy = type(event)()
        copy.CopyFrom(event)
        copy.wall_time = 0
        out.append(copy.SerializeToString(deterministic=True))
    return out
