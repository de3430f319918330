"""asyncsummary's SummaryWriter writes what torch's SummaryWriter writes.

One script of calls (every method, torch tensors and NumPy arrays, several steps) runs
into ``torch.utils.tensorboard.SummaryWriter`` and into ``asyncsummary.SummaryWriter``.
Both log folders are read with TensorBoard's ``EventFileLoader`` (which applies
TensorBoard's own data migration) and compared run by run, tag by tag, step by step:
numbers exactly, images as decoded pixels, audio as decoded PCM frames, text and other
strings exactly, plugin metadata exactly. The embedding projector's files are compared
too (TSVs byte for byte, the sprite as pixels, the config as a parsed proto).

One difference is by design and normalised away: like TensorFlow's ``FileWriter``,
asyncsummary keeps plugin metadata only on the first value of each tag (TensorBoard
reads it from there), where torch repeats it on every value. The first value of every
tag must carry metadata equal to torch's.
"""

from __future__ import annotations

import io
import os
import wave

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.torch

STEPS = 3


# ------------------------------------------------------------------ the script
class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 2)

    def forward(self, x):  # noqa: D401 - torch's name
        return self.fc2(torch.relu(self.fc1(x)))


def _figure(step: int):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 1.5), dpi=40)
    axes = figure.add_subplot()
    axes.plot([0, 1, 2], [step, step + 1, step * 2])
    return figure


def _inputs(step: int) -> dict:
    """Every input of one step, fixed by the step number."""
    rng = np.random.default_rng(step)
    t = torch.Generator().manual_seed(step)
    return {
        "loss": float(1.0 / (step + 1)),
        "loss_t": torch.tensor(0.25 + step, dtype=torch.float32),
        "loss_bf16": torch.tensor(1.0 / 3 + step, dtype=torch.bfloat16),
        "loss_np": np.float32(0.5 * step),
        "acc_np": np.array([0.125 * step]),
        "tensor": torch.arange(6, dtype=torch.int64).reshape(2, 3) * step,
        "tensor_f": torch.rand(2, 2, generator=t, dtype=torch.float64),
        "hist_t": torch.randn(2000, generator=t),
        "hist_np": rng.normal(size=500).astype(np.float32),
        "hist_int": rng.integers(0, 10, size=300),
        "bins_edges": np.linspace(-3, 3, 13),
        "img_chw": torch.rand(3, 16, 20, generator=t),
        "img_hwc": rng.random((12, 10, 3)),
        "img_hw_u8": rng.integers(0, 256, size=(9, 7), dtype=np.uint8),
        "img_1hw": torch.rand(1, 8, 6, generator=t),
        "img_rgba": rng.random((6, 5, 4)).astype(np.float32),
        "imgs": torch.rand(5, 3, 8, 8, generator=t),
        "imgs_nhwc": rng.random((4, 8, 8, 1)),
        "boxes_img": torch.rand(3, 32, 32, generator=t),
        "boxes": torch.tensor([[1.0, 1.0, 10.0, 12.0], [5.0, 4.0, 20.0, 30.0]]),
        "video": torch.rand(1, 4, 3, 8, 8, generator=t),
        "audio": torch.rand(1, 800, generator=t) * 2 - 1,
        "audio_np": (rng.random(400) * 3 - 1.5),  # out of range: clipped, with torch's warning
        "pr_labels": rng.integers(0, 2, size=100),
        "pr_preds": torch.rand(100, generator=t),
        "pr_weights": rng.random(100),
        "vertices": torch.rand(1, 6, 3, generator=t),
        "colors": torch.randint(0, 256, (1, 6, 3), generator=t, dtype=torch.int32),
        "faces": np.array([[[0, 1, 2], [2, 3, 4], [3, 4, 5]]], dtype=np.int32),
    }


def _pr_raw(step: int) -> list[np.ndarray]:
    n = 5
    tp = np.arange(n, 0, -1, dtype=np.float64) * (step + 1)
    fp = np.arange(n, dtype=np.float64)
    tn = fp[::-1].copy()
    fn = np.full(n, float(step))
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    return [tp, fp, tn, fn, precision, recall]


def run_script(writer) -> None:
    """The same calls, in the same order, for torch's writer and ours."""
    writer.add_custom_scalars({"Losses": {"all": ["Multiline", ["loss", "loss_t"]]}})
    writer.add_custom_scalars_multilinechart(["loss", "acc"], category="More", title="ml")
    writer.add_custom_scalars_marginchart(["loss", "loss_lo", "loss_hi"], category="More", title="mg")
    writer.add_graph(_Net().eval(), torch.zeros(1, 4))
    for step in range(STEPS):
        x = _inputs(step)
        writer.add_scalar("loss", x["loss"], step)
        writer.add_scalar("loss_int", step * 3, step)
        writer.add_scalar("loss_t", x["loss_t"], step)
        writer.add_scalar("loss_bf16", x["loss_bf16"], step)
        writer.add_scalar("loss_np", x["loss_np"], step)
        writer.add_scalar("acc", x["acc_np"], step, walltime=1000.0 + step)
        writer.add_scalar("new_style", x["loss"], step, new_style=True)
        writer.add_scalar("new_style_t", x["loss_t"], step, new_style=True)
        writer.add_scalar("double", x["loss"], step, new_style=True, double_precision=True)
        writer.add_scalars("group/run", {"a": x["loss"], "b": x["loss_t"], "c": x["loss_np"]}, step)
        writer.add_tensor("tensor", x["tensor"], step)
        writer.add_tensor("tensor_f", x["tensor_f"], step)
        writer.add_histogram("hist/tensorflow", x["hist_t"], step)
        writer.add_histogram("hist/np_auto", x["hist_np"], step, bins="auto")
        writer.add_histogram("hist/fd", x["hist_np"], step, bins="fd")
        writer.add_histogram("hist/count", x["hist_int"], step, bins=7)
        writer.add_histogram("hist/edges", x["hist_t"], step, bins=x["bins_edges"])
        writer.add_histogram("hist/max_bins", x["hist_t"], step, max_bins=40)
        writer.add_histogram_raw(
            "hist/raw", min=-1.0, max=2.0, num=6, sum=3.5, sum_squares=7.25,
            bucket_limits=[0.0, 1.0, 2.0], bucket_counts=[1, 3, 2], global_step=step,
        )
        writer.add_image("img/chw", x["img_chw"], step)
        writer.add_image("img/hwc_np", x["img_hwc"], step, dataformats="HWC")
        writer.add_image("img/hw_u8", x["img_hw_u8"], step, dataformats="HW")
        writer.add_image("img/1hw", x["img_1hw"], step)
        writer.add_image("img/rgba", x["img_rgba"], step, dataformats="HWC")
        writer.add_images("img/batch", x["imgs"], step)
        writer.add_images("img/batch_nhwc", x["imgs_nhwc"], step, dataformats="NHWC")
        writer.add_image_with_boxes("img/boxes", x["boxes_img"], x["boxes"], step, labels=["a", "b"])
        writer.add_image_with_boxes("img/boxes_nolabel", x["boxes_img"], x["boxes"], step, rescale=2)
        writer.add_figure("figure", _figure(step), step)
        writer.add_figure("figures", [_figure(step), _figure(step + 1)], step)
        writer.add_video("video", x["video"], step, fps=2)
        writer.add_audio("audio", x["audio"], step, sample_rate=8000)
        writer.add_audio("audio_np", x["audio_np"], step)
        writer.add_text("text", f"**step** {step} ünïcode", step)
        writer.add_pr_curve("pr", x["pr_labels"], x["pr_preds"], step)
        writer.add_pr_curve("pr_weighted", x["pr_labels"], x["pr_preds"], step, num_thresholds=10, weights=x["pr_weights"])
        writer.add_pr_curve_raw("pr_raw", *_pr_raw(step), global_step=step, num_thresholds=5)
        writer.add_mesh("mesh", x["vertices"], colors=x["colors"], faces=x["faces"],
                        config_dict={"camera": {"cls": "PerspectiveCamera", "fov": 75}}, global_step=step)
    rng = np.random.default_rng(7)
    writer.add_embedding(torch.tensor(rng.random((6, 3))), metadata=[f"p{i}" for i in range(6)],
                         label_img=torch.rand(6, 3, 4, 5, generator=torch.Generator().manual_seed(1)),
                         global_step=2, tag="emb/one")
    writer.add_embedding(rng.random((4, 2)).astype(np.float32),
                         metadata=[[i, f"n{i}"] for i in range(4)], metadata_header=["id", "name"])
    writer.add_hparams({"lr": 0.1, "opt": "sgd", "nesterov": True, "batch": 32},
                       {"hp/loss": 0.5, "hp/acc": torch.tensor(0.75)}, run_name="trial1", global_step=2)
    writer.add_hparams({"lr": 0.01, "opt": "adam", "nesterov": False, "batch": 64},
                       {"hp/loss": 0.25}, hparam_domain_discrete={"opt": ["sgd", "adam"]}, run_name="trial2")


# --------------------------------------------------------------- reading back
def _run_events(run_dir: str) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    files = sorted(f for f in os.listdir(run_dir) if "tfevents" in f)
    events = []
    for name in files:
        events.extend(EventFileLoader(os.path.join(run_dir, name)).Load())
    return events


def _runs(logdir: str) -> dict[str, list]:
    runs = {}
    for folder, _dirs, files in os.walk(logdir):
        if any("tfevents" in f for f in files):
            runs[os.path.relpath(folder, logdir)] = _run_events(folder)
    return runs


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def _frames(wav: bytes) -> tuple:
    with wave.open(io.BytesIO(wav)) as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.readframes(w.getnframes())


def _decoded(value) -> tuple:
    """A value's data, media decoded: (kind, comparable data)."""
    plugin = value.metadata.plugin_data.plugin_name
    if value.HasField("tensor"):
        tensor = value.tensor
        strings = list(tensor.string_val)
        if plugin == "images" and strings:
            return ("images", strings[:2], [_pixels(s).tolist() for s in strings[2:]])
        if plugin == "audio" and strings:
            return ("audio", [_frames(s) for s in strings[0::2]], strings[1::2])
        copy = type(tensor)()
        copy.CopyFrom(tensor)
        return ("tensor", copy.SerializeToString(deterministic=True))
    copy = type(value)()
    copy.CopyFrom(value)
    copy.ClearField("metadata")
    return ("value", copy.SerializeToString(deterministic=True))


def _normalised(events: list) -> list[tuple]:
    """(step, what, tag, data, metadata) per value; metadata only on a tag's first value."""
    out = []
    seen: set[str] = set()
    for event in events:
        what = event.WhichOneof("what")
        if what != "summary":
            copy = type(event)()
            copy.CopyFrom(event)
            copy.wall_time = 0
            copy.ClearField("source_metadata")  # the writer's name: "asyncsummary" here
            out.append((event.step, what, "", copy.SerializeToString(deterministic=True), None))
            continue
        for value in event.summary.value:
            metadata = None
            if value.tag not in seen:
                seen.add(value.tag)
                metadata = value.metadata.SerializeToString(deterministic=True)
            out.append((event.step, what, value.tag, _decoded(value), metadata))
    return out


@pytest.fixture(scope="module")
def both_logdirs(tmp_path_factory):
    import matplotlib

    matplotlib.use("Agg")
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    import asyncsummary

    root = tmp_path_factory.mktemp("equivalence")
    theirs, ours = str(root / "torch"), str(root / "ours")
    with TorchWriter(theirs, purge_step=1) as writer:
        run_script(writer)
    with asyncsummary.SummaryWriter(ours, purge_step=1) as writer:
        run_script(writer)
    return theirs, ours


def test_same_runs(both_logdirs):
    theirs, ours = both_logdirs
    assert sorted(_runs(ours)) == sorted(_runs(theirs))
    assert {"group_run_a", "group_run_b", "group_run_c", "trial1", "trial2"} <= set(_runs(ours))


@pytest.mark.parametrize("run", [".", "group_run_a", "group_run_b", "group_run_c", "trial1", "trial2"])
def test_same_events_run_by_run(both_logdirs, run):
    theirs, ours = both_logdirs
    expected = _normalised(_run_events(os.path.join(theirs, run)))
    actual = _normalised(_run_events(os.path.join(ours, run)))
    assert [a[:3] for a in actual] == [e[:3] for e in expected]  # order, steps, tags
    for a, e in zip(actual, expected, strict=True):
        assert a[3] == e[3], f"data of {a[2]!r} at step {a[0]}"
        assert a[4] == e[4], f"metadata of {a[2]!r}"


def test_every_method_is_covered(both_logdirs):
    _theirs, ours = both_logdirs
    tags = {row[2] for row in _normalised(_run_events(ours))}
    for tag in ("loss", "loss_t", "new_style", "double", "tensor", "hist/tensorflow", "hist/raw",
                "img/chw", "img/batch", "img/boxes", "figure", "figures", "video", "audio",
                "text/text_summary", "pr", "pr_raw", "custom_scalars__config__",
                "step1", "__run_graph__"):  # add_graph's run metadata and graph, migrated
        assert tag in tags, tag
    assert any(t.startswith("mesh") for t in tags)
    whats = {row[1] for row in _normalised(_run_events(ours))}
    assert {"graph_def", "session_log", "file_version"} <= whats


def test_images_decode_to_the_same_pixels(both_logdirs):
    theirs, ours = both_logdirs

    def images(logdir):
        return [(r[0], r[2], r[3]) for r in _normalised(_run_events(logdir)) if r[3][0] == "images"]

    expected, actual = images(theirs), images(ours)
    assert len(actual) == STEPS * 11 and actual == expected


def test_audio_decodes_to_the_same_frames(both_logdirs):
    theirs, ours = both_logdirs

    def audio(logdir):
        return [(r[0], r[2], r[3]) for r in _normalised(_run_events(logdir)) if r[3][0] == "audio"]

    expected, actual = audio(theirs), audio(ours)
    assert len(actual) == STEPS * 2 and actual == expected
    assert actual[0][2][1][0][2] == 8000  # the sample rate made it through


def test_projector_files(both_logdirs):
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    theirs, ours = both_logdirs

    def files(logdir):
        out = {}
        for folder, _dirs, names in os.walk(logdir):
            for name in names:
                if "tfevents" not in name:
                    out[os.path.relpath(os.path.join(folder, name), logdir)] = os.path.join(folder, name)
        return out

    expected, actual = files(theirs), files(ours)
    assert sorted(actual) == sorted(expected)
    assert any(p.endswith("sprite.png") for p in actual) and any(p.endswith("metadata.tsv") for p in actual)
    for rel, path in expected.items():
        with open(path, "rb") as f:
            want = f.read()
        with open(actual[rel], "rb") as f:
            got = f.read()
        if rel.endswith(".png"):
            assert _pixels(got).tolist() == _pixels(want).tolist(), rel
        elif rel.endswith(".pbtxt"):
            assert text_format.Parse(got.decode(), ProjectorConfig()) == text_format.Parse(want.decode(), ProjectorConfig())
        else:
            assert got == want, rel
