"""Keras: ``asyncsummary.keras.TensorBoard`` logs what ``keras.callbacks.TensorBoard`` logs, without waiting.

A tiny regression (``benchmarks.tiny_models.keras_model``: Conv1D, Dense, Dense; random
data, seeded) is fitted for 3 epochs of 5 batches with validation, once with Keras's
callback and once with ours; both runs are read back through TensorBoard's
``EventAccumulator`` and must hold the same tags, steps and values: batch and epoch
scalars, evaluation scalars, learning rate, the model's Keras config, weight
histograms (equal to the last bit) and weight images (equal pixels; the PNG encoders
differ). Keras's callback needs TensorFlow, so these run in the full suite; the torch
backend is checked in a child process (the backend is chosen at Keras's import).
"""

from __future__ import annotations

import io
import json
import os
import random
import threading

import keras
import numpy as np
import pytest

import asyncsummary
from asyncsummary.keras import TensorBoard
from benchmarks.tiny_models import keras_data, keras_model

from .framework_runs import GatedStorage, release_when_stalled, run_contents
from .procs import DEADLINE, run
from .readers import event_files, tb_run_events

pytestmark = pytest.mark.tf

EPOCHS, BATCH = 3, 16  # 72 training rows (96 less a quarter for validation): 5 batches


def _fit(callback, model=None, epochs=EPOCHS, validation=True, **fit_args):
    model = model or keras_model()
    x, y = keras_data()
    return model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        validation_split=0.25 if validation else 0.0,
        callbacks=[callback],
        verbose=0,
        **fit_args,
    )


def _decoded_images(run):
    """Image tensors' PNGs replaced by their pixels: two encoders, one picture."""
    from PIL import Image

    for tag, (plugin, content, values) in run["tensors"].items():
        if plugin == "images":
            decoded = [
                (
                    step,
                    strings[:2]
                    + tuple(
                        np.asarray(Image.open(io.BytesIO(png))).tolist() for png in strings[2:]
                    ),
                )
                for step, strings in values
            ]
            run["tensors"][tag] = (plugin, content, decoded)
    return run


def _assert_like_keras(ours, stock):
    got, expected = run_contents(ours), run_contents(stock)
    assert sorted(got) == ["train", "validation"] == sorted(expected)
    for name in expected:
        assert _decoded_images(got[name]) == _decoded_images(expected[name]), name
    return got


def _keras_run(tmp_path, **options):
    root = str(tmp_path / "keras")
    _fit(keras.callbacks.TensorBoard(root, **options))
    return root


@pytest.mark.parametrize("update_freq", [1, "epoch"])
@pytest.mark.parametrize("histogram_freq", [0, 1])
def test_same_runs_as_keras(tmp_path, update_freq, histogram_freq):
    options = dict(
        update_freq=update_freq, histogram_freq=histogram_freq, write_images=bool(histogram_freq)
    )
    stock = _keras_run(tmp_path, **options)
    ours = str(tmp_path / "ours")
    _fit(TensorBoard(ours, **options))
    runs = _assert_like_keras(ours, stock)

    train = runs["train"]["tensors"]
    batches = EPOCHS * 5
    expected_steps = list(range(1, batches + 1)) if update_freq == 1 else []
    assert [s for s, _ in train.get("batch_loss", ("", "", []))[2]] == expected_steps
    assert [s for s, _ in train["epoch_loss"][2]] == list(range(EPOCHS))
    assert [s for s, _ in train["epoch_learning_rate"][2]] == list(range(EPOCHS))
    assert train["keras"][0] == "graph_keras_model"
    assert json.loads(train["keras"][2][0][1][0])["class_name"] == "Sequential"
    validation = runs["validation"]["tensors"]
    assert [s for s, _ in validation["evaluation_loss_vs_iterations"][2]] == [5, 10, 15]
    weights = [t for t in train if t.endswith("/histogram")]
    assert len(weights) == (6 if histogram_freq else 0)  # 3 kernels, 3 biases
    images = [t for t in train if t.endswith("/image")]
    assert len(images) == (5 if histogram_freq else 0)  # the last bias is 1 value: no image


def test_steps_per_second_and_every_other_epoch(tmp_path):
    """Timed values differ by nature: their tags and steps are compared."""
    options = dict(update_freq=1, histogram_freq=2, write_steps_per_second=True)
    stock = _keras_run(tmp_path, **options)
    ours = str(tmp_path / "ours")
    callback = TensorBoard(ours, **options)
    assert callback.async_safe is False  # the batch's time is taken on the training thread
    _fit(callback)
    runs = _assert_like_keras(ours, stock)
    train = runs["train"]["tensors"]
    assert [s for s, _ in train["batch_steps_per_second"][2]] == list(range(1, 16))
    assert [s for s, _ in train["epoch_steps_per_second"][2]] == [0, 1, 2]
    assert [s for s, _ in train["sequential/dense/kernel/histogram"][2]] == [0, 2]


def test_the_readme_line(tmp_path, monkeypatch):
    """The README's Keras section, run as it is written (relative "logs")."""
    monkeypatch.chdir(tmp_path)
    tensorboard = TensorBoard("logs", update_freq=1, histogram_freq=1)
    _fit(tensorboard)
    stock = _keras_run(tmp_path, update_freq=1, histogram_freq=1)
    _assert_like_keras(str(tmp_path / "logs"), stock)


def test_every_n_batches_keeps_every_epoch_which_keras_drops(tmp_path):
    """update_freq=2: Keras's epoch metrics, evaluation metrics and histograms are
    written under the record_if of the epoch's last batch, so an epoch whose last
    batch number is odd loses them. Ours writes them every epoch; the rest is equal."""
    options = dict(update_freq=2, histogram_freq=1)
    stock = run_contents(_keras_run(tmp_path, **options))
    ours = str(tmp_path / "ours")
    _fit(TensorBoard(ours, **options))
    got = run_contents(ours)
    for name in ("train", "validation"):
        assert sorted(got[name]["tensors"]) == sorted(stock[name]["tensors"])
        for tag, (plugin, content, values) in stock[name]["tensors"].items():
            mine = got[name]["tensors"][tag]
            assert mine[:2] == (plugin, content)
            assert all(value in mine[2] for value in values), tag
    train, validation = got["train"]["tensors"], got["validation"]["tensors"]
    assert [s for s, _ in train["batch_loss"][2]] == list(range(2, 16, 2))
    assert [s for s, _ in train["epoch_loss"][2]] == [0, 1, 2]
    assert [s for s, _ in train["sequential/dense/kernel/histogram"][2]] == [0, 1, 2]
    assert [s for s, _ in validation["evaluation_loss_vs_iterations"][2]] == [5, 10, 15]
    assert [s for s, _ in stock["train"]["tensors"]["epoch_loss"][2]] == [1]  # batch 10 only


def test_async_safe_where_keras_dispatches_batch_ends_to_its_threads(tmp_path):
    """Keras runs an async_safe callback's batch ends on its thread pool only on the
    backends it deems thread safe (torch, JAX; not TensorFlow: there, inline)."""
    from keras.src import backend
    from keras.src.callbacks.callback_list import CallbackList

    callback = TensorBoard(str(tmp_path), update_freq=1)
    assert callback.async_safe is True
    assert CallbackList([callback])._async_train is backend.IS_THREAD_SAFE
    assert TensorBoard(str(tmp_path), write_steps_per_second=True).async_safe is False


def test_batch_ends_out_of_order_are_written_in_step_order(tmp_path):
    """Keras's callback threads may end batch 3 before batch 2: the file keeps step order."""
    callback = TensorBoard(str(tmp_path), update_freq=1)
    callback.set_model(keras_model())
    callback.on_train_begin()
    for batch in range(40):
        callback.on_train_batch_begin(batch)
    order = list(range(40))
    random.Random(0).shuffle(order)
    threads = [
        threading.Thread(target=callback.on_train_batch_end, args=(batch, {"loss": float(batch)}))
        for batch in order
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    callback.on_train_end()
    values = [
        (e.step, e.summary.value[0].tensor.tensor_content)
        for e in tb_run_events(str(tmp_path / "train"))
        if e.summary.value and e.summary.value[0].tag == "batch_loss"
    ]
    assert values == [(b + 1, np.float32(b).tobytes()) for b in range(40)]


def test_training_runs_while_the_storage_is_stalled(tmp_path):
    """Every batch, the epoch ends (histograms, images, validation) run while the
    storage has taken no byte; released at the end, every event is there."""
    storage = GatedStorage()

    class ReleaseAtTheEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            release_when_stalled(storage)

    ours = str(tmp_path / "ours")
    callback = TensorBoard(
        ours,
        update_freq=1,
        histogram_freq=1,
        write_images=True,
        writer_options={"sink_factory": storage.factory},
    )
    model = keras_model()
    x, y = keras_data()
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        validation_split=0.25,
        verbose=0,
        callbacks=[ReleaseAtTheEnd(), callback],  # released before ours closes its writers
    )
    stock = _keras_run(tmp_path, update_freq=1, histogram_freq=1, write_images=True)
    _assert_like_keras(ours, stock)


def test_a_second_fit_and_evaluate_go_on_in_new_files(tmp_path):
    """Keras closes its writers at the end of each fit; so do we, and a later fit
    or evaluate opens a new event file in the same run, as Keras's does."""
    options = dict(update_freq=1)
    runs = {}
    for name, callback_class in (("ours", TensorBoard), ("keras", keras.callbacks.TensorBoard)):
        root = str(tmp_path / name)
        callback = callback_class(root, **options)
        model = keras_model()
        _fit(callback, model=model, epochs=1)
        _fit(callback, model=model, epochs=1)
        x, y = keras_data()
        model.evaluate(x, y, batch_size=BATCH, callbacks=[callback], verbose=0)
        runs[name] = root
    # evaluate() does not close the writers (Keras's neither): its events are written
    # within flush_secs, or now.
    asyncsummary.flush_all()
    _assert_like_keras(runs["ours"], runs["keras"])
    for name in ("train", "validation"):  # a file per fit, and evaluate's model config
        assert len(event_files(str(tmp_path / "ours" / name))) == len(
            event_files(str(tmp_path / "keras" / name))
        )


def test_embeddings_are_written_for_the_projector(tmp_path):
    def embedding_model():
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((4,), dtype="int32"),
                keras.layers.Embedding(10, 3, name="words"),
                keras.layers.Flatten(),
                keras.layers.Dense(1),
            ]
        )
        model.compile("sgd", "mse")
        return model

    x = np.random.default_rng(0).integers(0, 10, (32, 4)).astype("int32")
    y = x.sum(1, keepdims=True).astype("float32")
    roots = {}
    for name, callback_class in (("ours", TensorBoard), ("keras", keras.callbacks.TensorBoard)):
        roots[name] = root = str(tmp_path / name)
        model = embedding_model()
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[
                callback_class(root, embeddings_freq=1, embeddings_metadata={"words": "words.tsv"})
            ],
        )
    with open(os.path.join(roots["ours"], "projector_config.pbtxt")) as f:
        ours_config = f.read()
    with open(os.path.join(roots["keras"], "projector_config.pbtxt")) as f:
        assert ours_config == f.read()
    assert 'metadata_path: "words.tsv"' in ours_config
    for epoch in (0, 1):
        name = f"keras_embedding.ckpt-{epoch}.weights.h5"
        ours_file = os.path.join(roots["ours"], "train", name)
        assert os.path.exists(ours_file), name
        restored = embedding_model()
        restored.load_weights(ours_file)
        stock = embedding_model()
        stock.load_weights(os.path.join(roots["keras"], "train", name))
        for a, b in zip(restored.get_weights(), stock.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(profile_batch=3), "does not profile"),
        (dict(profile_batch=(2, 4)), "does not profile"),
        (dict(profile_batch="5"), "does not profile"),
        (dict(update_freq=0), "update_freq"),
        (dict(update_freq="step"), "update_freq"),
        (dict(histogram_freq=-1), "histogram_freq"),
        (dict(embeddings_freq=1.5), "embeddings_freq"),
    ],
)
def test_bad_arguments_are_refused_at_construction(tmp_path, kwargs, error):
    with pytest.raises(ValueError, match=error):
        TensorBoard(str(tmp_path), **kwargs)


def test_unknown_embedding_layer_names_are_refused_as_keras_refuses_them(tmp_path):
    callback = TensorBoard(str(tmp_path), embeddings_freq=1, embeddings_metadata={"nope": "m.tsv"})
    with pytest.raises(ValueError, match="Unrecognized `Embedding` layer names"):
        _fit(callback, epochs=1)


def test_profile_batch_zero_forms_are_accepted(tmp_path):
    for value in (0, "0", (0, 0), "0,0"):
        TensorBoard(str(tmp_path), profile_batch=value)


_BACKEND_FIT = """
    import importlib.abc, importlib.machinery, os, sys, threading
    os.environ["KERAS_BACKEND"] = sys.argv[3]

    class NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # TensorFlow's spec is found (torch looks for it); importing it fails.
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                return importlib.machinery.ModuleSpec(name, self)
        def create_module(self, spec):
            raise ImportError(f"{spec.name} is blocked in this test")
        def exec_module(self, module):
            pass

    if sys.argv[2] == "ours":  # and no TensorFlow to be had: Keras then does without it
        sys.meta_path.insert(0, NoTensorFlow())
    import keras
    from asyncsummary.keras import TensorBoard
    from benchmarks.tiny_models import keras_data, keras_model
    assert keras.backend.backend() == sys.argv[3]
    threads = set()

    class Recording(TensorBoard):
        def on_train_batch_end(self, batch, logs=None):
            threads.add(threading.current_thread() is threading.main_thread())
            super().on_train_batch_end(batch, logs)

    options = dict(update_freq=1, histogram_freq=1, write_images=True)
    if sys.argv[2] == "ours":
        callback = Recording(sys.argv[1], **options)
    else:
        callback = keras.callbacks.TensorBoard(sys.argv[1], **options)
    x, y = keras_data()
    keras_model().fit(x, y, batch_size=16, epochs=3, validation_split=0.25, callbacks=[callback], verbose=0)
    print("tensorflow imported:", "tensorflow" in sys.modules)
    print("batch ends on the training thread:", sorted(threads))
"""


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.torch), "jax"])
def test_other_backends_log_what_keras_logs_without_tensorflow(tmp_path, backend):
    """Keras 3 on torch and JAX: ours in a process where TensorFlow cannot be imported,
    Keras's (which needs it) in another; the runs must be equal. There Keras hands the
    batch ends of an async_safe callback to its threads: they come back in step order."""
    ours, stock = str(tmp_path / "ours"), str(tmp_path / "keras")
    result = run(_BACKEND_FIT, ours, "ours", backend, timeout=3 * DEADLINE)
    assert "tensorflow imported: False" in result.stdout
    assert "batch ends on the training thread: [False]" in result.stdout, result.stdout
    run(_BACKEND_FIT, stock, "keras", backend, timeout=3 * DEADLINE)
    runs = _assert_like_keras(ours, stock)
    train = runs["train"]["tensors"]
    assert [s for s, _ in train["batch_loss"][2]] == list(range(1, EPOCHS * 5 + 1))
    assert "sequential/conv1d/kernel/image" in train


def test_a_value_that_is_not_a_number_is_a_clear_error_and_later_batches_still_land(tmp_path):
    callback = TensorBoard(str(tmp_path), update_freq=1)
    callback.on_train_begin()
    for batch, loss in enumerate((1.0, "oops", 3.0)):
        callback.on_train_batch_begin(batch)
        if isinstance(loss, str):
            with pytest.raises(
                TypeError, match="batch_loss: a scalar must be a real number, not str"
            ):
                callback.on_train_batch_end(batch, {"loss": loss})
        else:
            callback.on_train_batch_end(batch, {"loss": loss})
    callback.on_train_end()
    steps = [e.step for e in tb_run_events(str(tmp_path / "train")) if e.summary.value]
    assert steps == [1, 3]


def test_weights_that_diverged_still_get_a_histogram():
    """NaN and infinite weights (a diverged model) are binned, never an error."""
    from asyncsummary.keras import _summaries

    for values in (np.array([np.nan, 1.0, 2.0]), np.array([-np.inf, 0.0, np.inf]), np.array([])):
        buckets = _summaries.histogram_buckets(values)
        assert buckets.shape == (30, 3) and buckets[:, 2].sum() == values.size


def test_the_readme_section_shows_what_this_module_runs():
    """The README's Keras line (the callback call a user copies) appears verbatim here."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = re.search(
        r"^## Keras \(`asyncsummary.keras.TensorBoard`\)\n(.*?)(?=^## )", readme, re.M | re.S
    )
    assert section, "README has no Keras section"
    code = "\n".join(re.findall(r"```python\n(.*?)```", section.group(1), re.S))
    calls = re.findall(r"\bTensorBoard\([^()]*\)", code)
    assert calls and "from asyncsummary.keras import TensorBoard" in code
    source = Path(__file__).read_text()
    assert all(call in source for call in calls), calls
    assert "`tests/test_keras.py`" in section.group(1)


def test_an_evaluate_without_fit_is_written_at_exit(tmp_path):
    """evaluate() leaves the writers open (as Keras's): the process's exit writes them."""
    code = """
        import sys
        from asyncsummary.keras import TensorBoard
        from benchmarks.tiny_models import keras_data, keras_model
        x, y = keras_data()
        model = keras_model()
        model.evaluate(x, y, batch_size=16, verbose=0, callbacks=[TensorBoard(sys.argv[1])])
    """
    run(code, str(tmp_path), timeout=2 * DEADLINE)
    train = {v.tag for e in tb_run_events(str(tmp_path / "train")) for v in e.summary.value}
    assert train == {"keras"}  # the model's config, written by set_model
    validation = [
        (e.step, v.tag)
        for e in tb_run_events(str(tmp_path / "validation"))
        for v in e.summary.value
    ]
    assert validation == [(0, "evaluation_loss_vs_iterations"), (0, "evaluation_mae_vs_iterations")]


def test_a_remote_log_dir_gets_the_same_runs(tmp_path):
    """An fsspec URL as log_dir (memory://, as s3:// or gs://): the same runs, uploaded."""
    from asyncsummary.remote import download

    url = f"memory://keras-{os.getpid()}-{id(tmp_path)}/logs"
    _fit(TensorBoard(url, update_freq=1, histogram_freq=1, write_images=True))
    ours = tmp_path / "ours"
    for name in ("train", "validation"):
        assert download(f"{url}/{name}", ours / name)
    stock = _keras_run(tmp_path, update_freq=1, histogram_freq=1, write_images=True)
    _assert_like_keras(str(ours), stock)
