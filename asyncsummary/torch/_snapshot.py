"""Caller's side: a snapshot of each input, taken at the call, read on a worker later.

A value handed to ``add_*`` may change right after the call (an optimizer step updates
weights in place, a buffer is reused for the next batch); what is logged must be the
value *at the call*. So the caller takes a snapshot, as cheaply as it can:

* NumPy arrays and CPU tensors: a copy (one ``memcpy`` on the caller's thread; no
  conversion, no encoding).
* Python and NumPy scalars, strings: kept as they are (they cannot change).
* CUDA tensors (:class:`CudaBackend`): a device-to-host copy *started* on the caller's
  current stream into a pinned staging buffer taken from a pool, and a CUDA event
  recorded right after it on the same stream. The caller never waits for the GPU; the
  worker that builds the summary waits for the event, then reads the buffer and gives
  it back to the pool.

**CUDA stream contract.** The copy is queued on the *current stream* of the tensor's
device at the call, so it sees every kernel queued on that stream before the call, and
kernels queued on that stream afterwards (an in-place update of the same tensor, say)
cannot change it. A tensor produced on another stream must be made ready for the
current one first (``torch.cuda.current_stream().wait_stream(other)``), exactly as for
any other op; writes to it from another stream after the call are not ordered with the
copy. The snapshot keeps a reference to the tensor until the copy has completed, so
its memory cannot be reused by the caching allocator in the meantime.

Other devices (MPS, XPU, ...) have no backend: their tensors are copied to the CPU at
the call, which waits for the device as ``.cpu()`` does. :func:`register_backend` is the
seam that adds one (the tests use it to drive the deferred path without a GPU).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

__all__ = [
    "BufferPool",
    "CudaBackend",
    "DeviceCopy",
    "DeviceBackend",
    "HostValue",
    "Snapshot",
    "backend_for",
    "register_backend",
    "take",
]

#: Pinned bytes a pool keeps for reuse; buffers beyond it are freed on release.
DEFAULT_POOL_BYTES = 256 << 20


class Snapshot:
    """An input as it was at the call. ``result()`` may wait (never on the caller)."""

    __slots__ = ("nbytes",)

    nbytes: int

    def result(self) -> Any:
        raise NotImplementedError

    def release(self) -> None:
        """Hand back what the snapshot holds (staging buffers); call once, after use."""


class HostValue(Snapshot):
    """A value already on the host: a private copy, or an immutable scalar or string."""

    __slots__ = ("_value",)

    def __init__(self, value: Any, nbytes: int = 0) -> None:
        self._value = value
        self.nbytes = nbytes

    def result(self) -> Any:
        return self._value

    def release(self) -> None:
        self._value = None


class _Event(Protocol):
    def synchronize(self) -> None: ...


class DeviceCopy(Snapshot):
    """A device-to-host copy in flight: ``result()`` waits for its event, on a worker."""

    __slots__ = ("_buffer", "_event", "_source", "_pool")

    def __init__(self, buffer: torch.Tensor, event: _Event, source: torch.Tensor, pool: BufferPool) -> None:
        self._buffer: torch.Tensor | None = buffer
        self._event: _Event | None = event
        self._source: torch.Tensor | None = source  # keeps device memory alive until copied
        self._pool = pool
        self.nbytes = buffer.numel() * buffer.element_size()

    def _wait(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.synchronize()
        self._source = None

    def result(self) -> torch.Tensor:
        self._wait()
        assert self._buffer is not None, "snapshot already released"
        return self._buffer

    def release(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is None:
            return
        self._wait()  # never recycle a buffer that a copy may still be writing
        self._pool.release(buffer)


class BufferPool:
    """Host staging buffers reused by shape class (dtype, element count); thread-safe.

    Taken on the caller's thread, given back on a worker once the summary is built.
    Up to ``max_bytes`` of free buffers are kept; a release beyond that frees the
    buffer instead, so a burst of large tensors does not pin memory for good.
    """

    def __init__(self, allocate: Callable[[torch.dtype, int], torch.Tensor], max_bytes: int = DEFAULT_POOL_BYTES) -> None:
        self._allocate = allocate
        self._max_bytes = max_bytes
        self._free: dict[tuple[torch.dtype, int], list[torch.Tensor]] = {}
        self._free_bytes = 0
        self._lock = threading.RLock()
        self.allocations = 0  #: buffers allocated so far (the rest were reused)

    def acquire(self, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """A flat buffer of ``numel`` elements of ``dtype`` (contents undefined)."""
        key = (dtype, numel)
        with self._lock:
            free = self._free.get(key)
            if free:
                buffer = free.pop()
                self._free_bytes -= _nbytes(buffer)
                return buffer
            self.allocations += 1
        return self._allocate(dtype, numel)

    def release(self, buffer: torch.Tensor) -> None:
        flat = buffer.view(-1) if buffer.dim() != 1 else buffer
        size = _nbytes(flat)
        with self._lock:
            if self._free_bytes + size > self._max_bytes:
                return
            self._free.setdefault((flat.dtype, flat.numel()), []).append(flat)
            self._free_bytes += size

    @property
    def free_bytes(self) -> int:
        return self._free_bytes


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class DeviceBackend(Protocol):
    """Starts a device-to-host copy without waiting for it."""

    def snapshot(self, tensor: torch.Tensor) -> Snapshot: ...


class CudaBackend:
    """Non-blocking copies into pinned buffers, each followed by a CUDA event.

    Not verified on GPU hardware yet: no GPU was available where this was written.
    """

    def __init__(self, max_pool_bytes: int = DEFAULT_POOL_BYTES) -> None:
        self.pool = BufferPool(self._allocate, max_pool_bytes)

    @staticmethod
    def _allocate(dtype: torch.dtype, numel: int) -> torch.Tensor:
        return torch.empty(numel, dtype=dtype, pin_memory=True)

    def snapshot(self, tensor: torch.Tensor) -> Snapshot:
        source = tensor.detach()
        stream = torch.cuda.current_stream(source.device)
        buffer = self.pool.acquire(source.dtype, source.numel()).view(source.shape)
        # copy_ runs on the current stream of the source's device; non_blocking into
        # pinned memory makes it an asynchronous cudaMemcpyAsync, so the caller goes on.
        buffer.copy_(source, non_blocking=True)
        # blocking=True: the worker that waits sleeps instead of spinning a CPU core.
        event = torch.cuda.Event(blocking=True)
        event.record(stream)
        return DeviceCopy(buffer, event, source, self.pool)


_backends: dict[str, DeviceBackend] = {}
_backends_lock = threading.RLock()  # reentrant: see _engine.add


def register_backend(device_type: str, backend: DeviceBackend | None) -> DeviceBackend | None:
    """Route tensors of ``device_type`` through ``backend`` (None: remove). Returns the old one."""
    with _backends_lock:
        old = _backends.pop(device_type, None)
        if backend is not None:
            _backends[device_type] = backend
        return old


def backend_for(device_type: str) -> DeviceBackend | None:
    """The backend of a device type; CUDA's is made on first use."""
    backend = _backends.get(device_type)
    if backend is None and device_type == "cuda":
        with _backends_lock:
            backend = _backends.get("cuda")
            if backend is None:
                backend = _backends["cuda"] = CudaBackend()
    return backend


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A private copy of a CPU tensor, made by one plain ``memcpy`` on this thread.

    ``tensor.clone()`` splits a large copy over torch's intra-op threads; on a machine
    whose cores are busy (a training process, shared cores) waking them costs
    milliseconds (8 ms for 400 KB measured here, against 30 µs for a NumPy copy). The
    copy goes through a NumPy view of the tensor instead; dtypes NumPy lacks
    (bfloat16, ...) and conjugate or negative views fall back to ``clone()``.
    """
    try:
        array = tensor.numpy()  # a view: no copy yet
    except (TypeError, RuntimeError):
        return tensor.clone()
    return torch.from_numpy(array.copy())


def take(value: Any) -> Snapshot:
    """Snapshot one input of an ``add_*`` call (see the module docstring)."""
    if isinstance(value, torch.Tensor):
        device_type = value.device.type
        backend = backend_for(device_type)
        if backend is not None:
            return backend.snapshot(value)
        if device_type == "cpu":
            copy = _host_copy(value.detach())
        elif device_type == "meta":
            copy = value  # no data to copy; torch logs a placeholder for it
        else:
            copy = value.detach().to("cpu")  # waits for that device, like .cpu()
        return HostValue(copy, _nbytes(copy))
    if isinstance(value, np.ndarray):
        array = value.copy()
        return HostValue(array, array.nbytes)
    return HostValue(value)


def is_deferred_device(value: Any) -> bool:
    """True for a tensor whose data must not be read on the caller (a device backend)."""
    return isinstance(value, torch.Tensor) and backend_for(value.device.type) is not None
