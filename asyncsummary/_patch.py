"""``asyncsummary.patch()``: make the frameworks' ``SummaryWriter`` ours, without editing them.

Lightning, Hugging Face ``Trainer``, accelerate and ignite all build their writer from
``torch.utils.tensorboard.SummaryWriter`` or ``tensorboardX.SummaryWriter``, looked up
*when the writer is made* (inside a property, a callback's ``__init__``, a tracker's
``start()``). So replacing those two module attributes is enough, provided it happens
before the framework makes its writer. Patching a framework's own module attribute
would not be: Lightning imports the class inside a property, so its module never holds
one.

What is replaced (and put back by :meth:`Patch.undo`):

* ``torch.utils.tensorboard.SummaryWriter`` and ``torch.utils.tensorboard.writer.SummaryWriter``
* when tensorboardX is installed, ``tensorboardX.SummaryWriter`` and
  ``tensorboardX.writer.SummaryWriter``

Each becomes a subclass of :class:`asyncsummary.SummaryWriter` that takes the same
arguments as the class it replaces. tensorboardX's extra arguments:

* ``logdir=`` (its name for ``log_dir``) is accepted, positionally too.
* Arguments ours cannot honour (``write_to_disk=False``, an enabled ``comet_config``,
  any keyword tensorboardX passes on to its ``FileWriter``) are never dropped: that one
  writer is tensorboardX's own, with a warning saying why, so it does exactly what was
  asked (synchronously, as before).

tensorboardX-only methods (``export_scalars_to_json``, ``add_openvino_graph``) raise
``AttributeError`` on our writer: loud, not silent.

``patch()`` is idempotent and thread-safe: the replacement is installed by the first
active call and removed when the last active handle is undone (handles nest, in any
order). Importing this module imports neither torch nor tensorboardX; ``patch()`` does.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import warnings
from types import TracebackType
from typing import Any

__all__ = ["Patch", "patch"]

#: ``(module, attribute)`` pairs that hold a framework-visible SummaryWriter class.
TORCH_TARGETS = (
    ("torch.utils.tensorboard", "SummaryWriter"),
    ("torch.utils.tensorboard.writer", "SummaryWriter"),
)
TENSORBOARDX_TARGETS = (("tensorboardX", "SummaryWriter"), ("tensorboardX.writer", "SummaryWriter"))

_lock = threading.RLock()  # reentrant: see _engine.add
_active = 0  # handles not yet undone
_flush_waits = False  # the option of the active patch
_saved: list[tuple[Any, str, Any, Any]] = []  # (module, attribute, original, ours)
_classes: dict[str, type] = {}


def _dropin_classes() -> dict[str, type]:
    """The replacement classes, made once (importing torch)."""
    if _classes:
        return _classes
    from .torch import SummaryWriter

    class TorchSummaryWriter(SummaryWriter):
        """``torch.utils.tensorboard.SummaryWriter`` under ``asyncsummary.patch()``.

        torch's arguments; ``flush_waits`` defaults to the patch's option.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("flush_waits", _flush_waits)
            super().__init__(*args, **kwargs)

    _TBX_POSITIONAL = (
        "logdir",
        "comment",
        "purge_step",
        "max_queue",
        "flush_secs",
        "filename_suffix",
        "write_to_disk",
        "log_dir",
        "comet_config",
    )

    class TensorboardXSummaryWriter(SummaryWriter):
        """``tensorboardX.SummaryWriter`` under ``asyncsummary.patch()``.

        tensorboardX's arguments (``logdir`` or ``log_dir``); its writer itself where
        an argument asks for something ours cannot do (see :mod:`asyncsummary._patch`).
        """

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            options = _tensorboardx_options(_TBX_POSITIONAL, args, kwargs)
            reason = _unsupported_by_us(options)
            if reason is not None:
                warnings.warn(
                    f"asyncsummary.patch(): tensorboardX.SummaryWriter({reason}) cannot be "
                    "honoured by asyncsummary; this writer is tensorboardX's own",
                    stacklevel=2,
                )
                return _original_tensorboardx()(*args, **kwargs)
            return super().__new__(cls)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            options = _tensorboardx_options(_TBX_POSITIONAL, args, kwargs)
            log_dir = options.pop("log_dir", None)
            logdir = options.pop("logdir", None)
            options.pop("write_to_disk", None)
            options.pop("comet_config", None)
            options.setdefault("flush_waits", _flush_waits)
            super().__init__(logdir if logdir is not None else log_dir, **options)

        @property
        def logdir(self) -> Any:
            """tensorboardX's name of ``log_dir``."""
            return self.log_dir

    _classes.update(torch=TorchSummaryWriter, tensorboardX=TensorboardXSummaryWriter)
    return _classes


def _tensorboardx_options(
    names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    if len(args) > len(names):
        raise TypeError(f"SummaryWriter() takes at most {len(names)} positional arguments")
    options = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name in options:
            raise TypeError(f"SummaryWriter() got multiple values for argument {name!r}")
        options[name] = value
    return options


#: Keywords of ours that tensorboardX's callers may pass through (ours, not theirs).
_OURS = {
    "flush_waits",
    "max_pending_bytes",
    "policy",
    "fsync",
    "block_timeout",
    "flush_timeout",
    "close_timeout",
    "max_file_bytes",
    "batch_bytes",
    "sink_factory",
    "storage_options",
}
_TBX_HONOURED = {
    "logdir",
    "log_dir",
    "comment",
    "purge_step",
    "max_queue",
    "flush_secs",
    "filename_suffix",
}


def _unsupported_by_us(options: dict[str, Any]) -> str | None:
    """Why ours cannot stand in for this tensorboardX writer, or None."""
    if options.get("write_to_disk", True) is False:
        return "write_to_disk=False"
    comet = options.get("comet_config")
    if comet is not None and not (isinstance(comet, dict) and comet.get("disabled", False)):
        return f"comet_config={comet!r}"
    extra = sorted(set(options) - _TBX_HONOURED - _OURS - {"write_to_disk", "comet_config"})
    if extra:
        return ", ".join(f"{name}=..." for name in extra)
    return None


def _original_tensorboardx() -> Any:
    for module, attribute, original, _ in _saved:
        if module.__name__ == "tensorboardX" and attribute == "SummaryWriter":
            return original
    return importlib.import_module("tensorboardX").SummaryWriter


class Patch:
    """What :func:`patch` returns: undo it, or use it as a context manager."""

    def __init__(self) -> None:
        self._undone = False

    def undo(self) -> None:
        """Give up this handle; the last active one puts the original classes back."""
        global _active
        with _lock:
            if self._undone:
                return
            self._undone = True
            _active -= 1
            if _active == 0:
                _restore()

    @property
    def active(self) -> bool:
        """True until :meth:`undo` (or the end of the ``with`` block)."""
        return not self._undone

    def __enter__(self) -> Patch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.undo()

    def __repr__(self) -> str:
        return f"<asyncsummary.Patch {'active' if self.active else 'undone'}>"


def patch(*, flush_waits: bool = False) -> Patch:
    """Make ``torch.utils.tensorboard.SummaryWriter`` (and tensorboardX's) asyncsummary's.

    Call it before the framework makes its writer (before ``Trainer(...)`` for Hugging
    Face, before ``trainer.fit`` for Lightning, before ``init_trackers`` for accelerate,
    before ``TensorboardLogger(...)`` for ignite). Writers made while it is active are
    :class:`asyncsummary.SummaryWriter` subclasses; writers made before stay what they
    are. Returns a :class:`Patch`: ``with asyncsummary.patch(): ...`` undoes it on exit,
    ``handle.undo()`` does it by hand; without either it lasts for the process.

    Args:
        flush_waits: Default of the writers it makes (a writer's own ``flush_waits=``
            argument wins). False by default: the frameworks call ``flush()`` after
            every logged step, and a waiting flush is exactly what stalls the step on
            slow storage. Their ``close()`` at the end of training still waits, and
            ``flush_secs`` (2 s) bounds what a crash loses.

    Raises:
        ValueError: if a patch with the other ``flush_waits`` is active.
        ModuleNotFoundError: if torch is not installed.
    """
    global _active, _flush_waits
    if not isinstance(flush_waits, bool):
        raise TypeError(f"flush_waits must be a bool, got {flush_waits!r}")
    with _lock:
        if _active:
            if flush_waits != _flush_waits:
                raise ValueError(
                    f"asyncsummary.patch(flush_waits={_flush_waits}) is active; undo it "
                    f"before patching with flush_waits={flush_waits}"
                )
        else:
            classes = _dropin_classes()
            _install(TORCH_TARGETS, classes["torch"])
            if importlib.util.find_spec("tensorboardX") is not None:
                _install(TENSORBOARDX_TARGETS, classes["tensorboardX"])
            _flush_waits = flush_waits
        _active += 1
        return Patch()


def _install(targets: tuple[tuple[str, str], ...], ours: type) -> None:
    for module_name, attribute in targets:
        module = importlib.import_module(module_name)
        original = getattr(module, attribute)
        setattr(module, attribute, ours)
        _saved.append((module, attribute, original, ours))


def _restore() -> None:
    while _saved:
        module, attribute, original, ours = _saved.pop()
        # Someone else replaced it since: theirs stays (putting ours' original back
        # would silently undo their patch).
        if getattr(module, attribute, None) is ours:
            setattr(module, attribute, original)
