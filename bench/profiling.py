"""Cost measurement: wall-clock, peak CUDA memory, working RSS and bytes saved for backward.

One context manager, :func:`profile_phase`, records a phase of a cell (docs/PERFORMANCE.md):

- wall-clock by ``time.perf_counter`` with ``torch.cuda.synchronize()`` before each read
  on a GPU, so queued kernels are counted;
- peak CUDA memory allocated and reserved during the phase (``reset_peak_memory_stats`` before);
- the phase's **working memory** on the CPU: the RSS high-water mark reached during the
  phase minus the RSS at its start (the kernel's mark is reset at the start, Linux
  ``/proc/self/clear_refs``), so the weights and earlier cells do not count — unlike the
  process's lifetime peak (``getrusage``), which is the same for every protection once the
  model is loaded and says nothing about them. ``None`` where the mark cannot be reset.
  Before the start is read, the memory that earlier cells freed is handed back to the
  kernel (:func:`release_free_memory`: glibc's ``malloc_trim(0)``, about 0.1 ms).
  Without it the first cell of a process paid for growing malloc's heap and every later
  cell reused those pages for free: SDS(+) read 70 MiB and SDS(−), the same graph with the
  other sign, 8.8 MiB, only because SDS(+) ran first (toy model, 3 steps, this 2-core CPU;
  #27). With it every cell starts from a trimmed heap and pays for the pages it touches;
- optionally the bytes of tensors saved for backward (``saved_tensors_hooks``), the
  device-independent measure of what a method keeps alive for its backward pass: in
  total (distinct storages) and **per step** (the peak of the saved bytes alive at once;
  a PGD step's graph is freed after its backward, so this is one step's figure).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import resource
import sys
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


def peak_rss_bytes() -> int:
    """This process's peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux ``/proc/self/status`` VmRSS); ``None`` where unavailable."""
    return _proc_status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0).

    Model loading often has a transient peak above anything a PGD step reaches (weights
    built in fp32, then cast), which would hide the step's own peak; after this call
    :func:`peak_rss_bytes` is the peak since the reset. Returns ``False`` when the
    platform does not allow it (then the peak is the one since process start).
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _libc_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> bool:
    """Return the heap memory that is free (freed tensors of earlier cells) to the kernel.

    ``malloc_trim(0)`` (glibc >= 2.8) releases the free top of every arena and ``madvise``s
    free pages inside them away, so they no longer count in the RSS. Then a phase's growth
    above its starting RSS is the memory the phase itself touches, whichever cell ran
    before it. ``False`` where the C library has no ``malloc_trim``.
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)  # ~0.1 ms; no gc.collect(): tensors are freed by reference counting, and a full
    # collection costs ~0.2 s in a process holding pandas and torch, inside every cell's time limit
    return True


def warm_up(model, prompt: str = "a photo") -> None:
    """One untimed gradient step through the model's shared graph, so no measured cell pays the process's first.

    Every protection of the registry differentiates some part of ``x -> E(x) -> eps(z_t, t, c)``
    (and the decoder for the encoder attacks); the first such pass in a process allocates what
    the process keeps (the CPU kernels' scratch buffers, the prompt embedding, lazily built
    modules), and the cell that runs it would read tens of MiB more working memory than the
    same graph run second (#27: SDS(+) first 72 MiB, SDS(-) after it 26 MiB, after the heap
    trim). A worker calls this once after loading a model, before its first cell; the
    measured cells then start on equal terms. Costs one forward and backward at the model's
    working size (well under a second on the toy model).
    """
    try:
        _warm_up(model, prompt)
    except Exception as error:  # a model this pass does not fit: the run goes on, and the log says what it costs
        logger.warning(
            "warm-up skipped (%s: %s); the first cell's working memory includes the process's first pass",
            type(error).__name__,
            error,
        )
    release_free_memory()


def _warm_up(model, prompt: str) -> None:
    size = int(model.resolution)
    generator = torch.Generator(device=model.device).manual_seed(0)
    images = torch.rand(1, 3, size, size, generator=generator, device=model.device, dtype=model.dtype)
    images.requires_grad_(True)
    latents = model.encode(images, mode="mean")
    timesteps = torch.full((1,), model.num_train_timesteps // 2, device=model.device, dtype=torch.long)
    # The family's own path and prediction (ε-UNet or flow transformer), so every family warms up.
    noise = torch.randn(latents.shape, generator=generator, device=model.device, dtype=model.dtype)
    predicted = model.predict(model.add_noise(latents, timesteps, noise), timesteps, model.encode_prompt(prompt, 1))
    decoded = model.decode(latents)
    (predicted.float().square().mean() + decoded.float().mean()).backward()
    images.grad = None
    for module in model.modules().values():
        module.zero_grad(set_to_none=True)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SavedTensorCounter:
    """Counts the bytes of tensors autograd saves for backward while active.

    Storage is counted once per distinct storage, so a tensor saved by several ops (or
    views of one buffer) is not double-counted. Storages listed in ``exclude`` (the
    model's parameters: they live in memory whether or not a step saves them) are
    counted apart, in ``excluded_bytes``, so ``bytes`` is what the method itself keeps alive.
    """

    def __init__(self, exclude: set[int] | None = None) -> None:
        self.bytes = 0
        self.excluded_bytes = 0
        self.tensors = 0
        self._seen: set[int] = set()
        self._exclude = exclude or set()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            size = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
            key, size = id(tensor), tensor.numel() * tensor.element_size()
        if key not in self._seen:
            self._seen.add(key)
            if key in self._exclude:
                self.excluded_bytes += size
            else:
                self.bytes += size
        self.tensors += 1
        return tensor

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def parameter_storages(*modules: torch.nn.Module | None) -> set[int]:
    """Storage addresses of every parameter and buffer of ``modules`` (for ``exclude=``)."""
    keys: set[int] = set()
    for module in modules:
        if module is None:
            continue
        for tensor in list(module.parameters()) + list(module.buffers()):
            try:
                keys.add(tensor.untyped_storage().data_ptr())
            except (RuntimeError, NotImplementedError):
                continue
    return keys


class LiveSavedCounter(SavedTensorCounter):
    """A :class:`SavedTensorCounter` that also tracks the saved bytes alive at once, and their peak.

    A saved storage stays counted while any tensor saved with it is alive (autograd holds
    what the pack hook returned until the graph is freed); ``peak_live_bytes`` is then
    the most a single step kept alive for its backward pass.
    """

    def __init__(self, exclude: set[int] | None = None) -> None:
        super().__init__(exclude)
        self.live_bytes = 0
        self.peak_live_bytes = 0
        self._holders: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        super().pack(tensor)
        try:
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):
            return tensor
        if key in self._exclude:
            return tensor
        if self._holders.get(key, 0) == 0:
            self.live_bytes += size
            self.peak_live_bytes = max(self.peak_live_bytes, self.live_bytes)
        self._holders[key] = self._holders.get(key, 0) + 1
        weakref.finalize(tensor, self._release, key, size)
        return tensor

    def _release(self, key: int, size: int) -> None:
        remaining = self._holders.get(key, 0) - 1
        if remaining <= 0:
            self._holders.pop(key, None)
            self.live_bytes -= size
        else:
            self._holders[key] = remaining


@contextlib.contextmanager
def count_saved_bytes(exclude: set[int] | None = None) -> Iterator[SavedTensorCounter]:
    """``with count_saved_bytes() as saved: loss.backward()`` -> ``saved.bytes``.

    ``exclude``: storage addresses not to count as the step's own (see
    :func:`parameter_storages`); they are summed in ``saved.excluded_bytes`` instead.
    """
    counter = SavedTensorCounter(exclude)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        yield counter


@dataclass
class PhaseRecord:
    """What :func:`profile_phase` measured. ``None`` means "not measured on this device"."""

    phase: str
    device: str
    wall_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_cuda_allocated_bytes: int | None = None
    peak_cuda_reserved_bytes: int | None = None
    saved_bytes: int | None = None
    working_rss_bytes: int | None = None
    saved_bytes_per_step: int | None = None

    def rows(self) -> list[tuple[str, float, str]]:
        """``(metric, value, unit)`` triples for the results store (pair="cost").

        The process's lifetime peak RSS is not among them: it is the same for every cell
        once the model is loaded. ``working_rss_bytes`` is the cell's own figure. Nor is the
        phase's total of distinct saved storages (``saved_bytes``): over many steps it
        counts reused addresses once and is no step's figure, while ``bench perf``'s
        ``saved_bytes`` is one step's; ``saved_bytes_per_step`` is the comparable number.
        """
        rows = [("wall_s", self.wall_s, "s")]
        for name in (
            "working_rss_bytes",
            "peak_cuda_allocated_bytes",
            "peak_cuda_reserved_bytes",
            "saved_bytes_per_step",
        ):
            value = getattr(self, name)
            if value is not None:
                rows.append((name, float(value), "B"))
        return rows


@contextlib.contextmanager
def profile_phase(
    phase: str, device: torch.device | str = "cpu", *, count_saved: bool = False, exclude: set[int] | None = None
) -> Iterator[PhaseRecord]:
    """Measure the enclosed block; the record is filled when the block exits.

    ``count_saved``: also count the bytes saved for backward (``exclude``: storages not
    to count, e.g. the model's parameters, see :func:`parameter_storages`).
    """
    device = torch.device(device)
    record = PhaseRecord(phase=phase, device=str(device))
    on_cuda = device.type == "cuda" and torch.cuda.is_available()
    if on_cuda:
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    release_free_memory()  # earlier cells' freed pages: not this cell's to reuse for free
    rss_reset = reset_peak_rss()
    start_rss = current_rss_bytes()
    saver = _live_saved(exclude) if count_saved else contextlib.nullcontext()
    start = time.perf_counter()
    try:
        with saver as counter:
            yield record
    finally:
        if on_cuda:
            _synchronize(device)
        record.wall_s = time.perf_counter() - start
        record.peak_rss_bytes = peak_rss_bytes()
        # VmHWM is the high-water mark that clear_refs resets; ru_maxrss may also hold the
        # marks of threads that exited earlier, which are not this cell's.
        high_water = _proc_status_bytes("VmHWM")
        if rss_reset and start_rss is not None and high_water is not None:
            record.working_rss_bytes = max(0, high_water - start_rss)
        if on_cuda:
            record.peak_cuda_allocated_bytes = int(torch.cuda.max_memory_allocated(device))
            record.peak_cuda_reserved_bytes = int(torch.cuda.max_memory_reserved(device))
        if count_saved and counter is not None:
            record.saved_bytes = counter.bytes
            record.saved_bytes_per_step = counter.peak_live_bytes


@contextlib.contextmanager
def _live_saved(exclude: set[int] | None) -> Iterator[LiveSavedCounter]:
    counter = LiveSavedCounter(exclude)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        yield counter
