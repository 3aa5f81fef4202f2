"""Ground-truth segments of a padded label batch, and segment means of a feature map — vectorized.

Everything here runs as tensor ops on the labels' device, with no ``.item()``/``.tolist()`` and no Python
loop over frames, segments or videos. The number of segments M is a data-dependent shape (every M×M ARIS
matrix has it). Given a static bound ``max_segments`` (the collate computes one on the CPU:
``data.collate.segment_capacity``) the segments are padded to it and nothing reads the device; without one a
``torch.nonzero`` finds M, which waits for the device (docs/training.md#no-host-syncs).

Two emission rules (docs/model.md#aris-segments):

* ``published_quirks=False``: a segment is a maximal run of equal labels ≠ ``ignore_index``; ignored
  frames (padding, or 255 inside a video) belong to no segment and split runs. Every real segment of
  every video is emitted.

* ``published_quirks=True``: the segments of the published per-frame scan. Per video row of the padded
  (N, T) label tensor it keeps a running label and start; at every frame whose label differs from the
  running one, it emits the running segment (start .. t−1) only if the new label is not 255, and then, in
  either case, starts a new running segment at t with the new label. After the last frame it emits the
  running segment only if the row's last label is not 255. Consequences, reproduced here:
  (a) a real run directly followed by a 255 frame is never emitted — so the last real segment of every
  padded (shorter) video is dropped, and so is the real segment just before a run of 255 inside a video;
  (b) a run of 255 followed by a real label is emitted with label 255 (the published code then indexes
  its K-row embedding and TAG tables out of range); we drop those instead of failing. Equivalently: the
  runs of the corrected rule, minus every run whose next frame is an ignored one. Runs never contain
  ignored frames in either mode, so segment means average real frames only.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from trgnet_fast.data.labels import IGNORE_INDEX, label_runs


class Segments(NamedTuple):
    """Segments of a label batch, in (video, time) order; M = number of segments.

    video (M,) long: batch index of each segment; start, end (M,) long: first/last frame (inclusive);
    label (M,) long: class of each segment; frame_segment (N, T) long: segment index of every frame
    that contributes to a segment mean, M for frames that contribute to none; count (M,) float: number
    of contributing frames per segment (≥ 1); valid (M,) bool: False for the padding slots of a static
    bound (``extract_segments(max_segments=...)``: video 0, label 0, start 0, end 0, count 1, no frames).
    """

    video: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    label: torch.Tensor
    frame_segment: torch.Tensor
    count: torch.Tensor
    valid: torch.Tensor

    @property
    def num_segments(self) -> int:
        """M, padding slots included."""
        return self.label.shape[0]


def extract_segments(labels: torch.Tensor, *, published_quirks: bool = True,
                     ignore_index: int = IGNORE_INDEX, max_segments: int | None = None,
                     batch_length: int | None = None) -> Segments:
    """Run-length encode a padded label batch.

    labels: (N, T) integer tensor, ``ignore_index`` on padding / ignored frames.
    published_quirks: True (default): the published emission rule; False: every real segment (module
        docstring).
    max_segments: None: M = the number of segments, found with ``torch.nonzero`` (a host sync on a GPU);
        an int: M = max_segments, the segments first and padding slots (``valid`` False) after them, no
        host sync. More segments than that is an error (``torch._assert_async``: raised at once on the CPU,
        a device-side assert on a GPU); ``data.collate.segment_capacity`` gives a bound that holds.
    batch_length: None (= T), or the batch's own length (its longest video) when the collate padded it further, to
        a length bucket (``data.collate.bucket_length``; every label from there on is ``ignore_index``): the
        published rule then ends each row there, so that the segments are those of the batch padded to its
        longest video only (docs/training.md#cuda-graphs).
    """
    if labels.dim() != 2:
        raise ValueError(f"labels: expected shape (N, T), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels: expected an integer dtype, got {labels.dtype}")
    if max_segments is not None and (isinstance(max_segments, bool) or not isinstance(max_segments, int)
                                     or max_segments < 1):
        raise ValueError(f"max_segments: expected None or an int >= 1, got {max_segments!r}")
    labels = labels.long()
    n, t = labels.shape
    if batch_length is not None and (isinstance(batch_length, bool) or not isinstance(batch_length, int)
                                     or not 1 <= batch_length <= t):
        raise ValueError(f"batch_length: expected None or an int in [1, T = {t}], got {batch_length!r}")
    end = t if batch_length is None else batch_length
    member, start = label_runs(labels, ignore_index)
    if published_quirks and t > 1:
        # drop the runs whose next frame is ignored: flag each run's last frame, then spread the flag
        # to the run's frames through the index of the next run end at or after every frame
        follows = torch.zeros_like(member)
        follows[:, :-1] = start[:, 1:] | ~member[:, 1:]
        follows[:, -1] = True
        run_end = member & follows
        dropped_end = run_end.clone()
        dropped_end[:, :-1] &= ~member[:, 1:]
        dropped_end[:, end - 1] = False  # the scan's end of a row: its running segment is emitted there
        idx = torch.arange(t, device=labels.device).expand(n, t)
        next_end = torch.where(run_end, idx, torch.full_like(idx, t - 1)).flip(1).cummin(1).values.flip(1)
        member = member & ~dropped_end.gather(1, next_end)
        start = start & member

    flat_start = start.reshape(-1)
    seg_of_frame = flat_start.long().cumsum(0) - 1  # non-decreasing: segment j's frames hold j
    if max_segments is None:
        starts = torch.nonzero(flat_start).squeeze(1)  # (M,) flat indices; the host sync
        m = starts.shape[0]
        valid = torch.ones(m, dtype=torch.bool, device=labels.device)
    else:
        m = max_segments
        found = seg_of_frame[-1:] + 1 if seg_of_frame.numel() else seg_of_frame.new_zeros(1)
        torch._assert_async(found[0] <= m, f"extract_segments: the labels hold more segments than "
                                           f"max_segments={m} (segment_capacity gives a bound)")
        slots = torch.arange(m, device=labels.device)
        valid = slots < found
        # segment j starts at the first frame whose index reaches j; padding slots point at frame 0
        starts = torch.where(valid, torch.searchsorted(seg_of_frame, slots), 0)
    member = member.reshape(-1) & (seg_of_frame < m)  # only past a failed bound check
    frame_segment = torch.where(member, seg_of_frame, torch.full_like(seg_of_frame, m))
    count = torch.zeros(m + 1, device=labels.device, dtype=torch.float32)
    count = count.index_add(0, frame_segment, torch.ones_like(frame_segment, dtype=torch.float32))[:m]
    count = count.clamp(min=1)  # padding slots: 1, so that their (zero) means divide cleanly
    video = starts // t
    start_t = starts - video * t
    end_t = start_t + count.long() - 1  # a segment's frames are contiguous
    flat_labels = labels.reshape(-1) if labels.numel() else labels.new_zeros(1)  # slots of an empty batch
    label = torch.where(valid, flat_labels[starts], 0)
    return Segments(video, start_t, end_t, label, frame_segment.reshape(n, t), count, valid)


def segment_means(features: torch.Tensor, segments: Segments, method: str = "auto") -> torch.Tensor:
    """Mean of ``features`` over the frames of each segment.

    features: (N, D, T) floating, same N, T as the labels the segments came from.
    method: "scatter" — scatter_add along T into an (N, D, M+1) buffer, then pick each segment's
        (video, segment) column: no transposed copies of the (N, D, T) map (measured 2.3× faster than
        "index_add" on CPU at N=8, T=6000, D=768); "index_add" — frame-major (N·T, D) rows added into
        (M+1, D): on CUDA neighbouring threads add to different columns, so atomics do not pile up
        on one address (the scatter variant adds ~150 consecutive frames into the same address);
        "auto" — index_add on CUDA, scatter elsewhere unless the (N, D, M+1) buffer would be larger
        than the features (M + 1 > T, very fragmented labels).
    Returns (M, D) in float32 for half types (the dtype the loss terms compute in: a mean rounded back to bf16 would
    move ARIS by ~1e-5 relative), else in the features' dtype; differentiable.
    """
    if features.dim() != 3:
        raise ValueError(f"features: expected shape (N, D, T), got {tuple(features.shape)}")
    n, d, t = features.shape
    if tuple(segments.frame_segment.shape) != (n, t):
        raise ValueError(f"features: expected N, T = {tuple(segments.frame_segment.shape)}, "
                         f"got {(n, t)}")
    m = segments.num_segments
    if method == "auto":
        method = "index_add" if features.device.type == "cuda" or m + 1 > t else "scatter"
    acc_dtype = torch.float32 if features.dtype in (torch.float16, torch.bfloat16) else features.dtype
    src = features.to(acc_dtype)
    if method == "scatter":
        buf = torch.zeros(n, d, m + 1, device=features.device, dtype=acc_dtype)
        buf = buf.scatter_add(2, segments.frame_segment[:, None, :].expand(n, d, t), src)
        sums = buf[segments.video, :, torch.arange(m, device=features.device)]  # (M, D)
    elif method == "index_add":
        rows = src.transpose(1, 2).reshape(n * t, d)
        sums = torch.zeros(m + 1, d, device=features.device, dtype=acc_dtype)
        sums = sums.index_add(0, segments.frame_segment.reshape(-1), rows)[:m]
    else:
        raise ValueError(f"method: expected 'auto', 'scatter' or 'index_add', got {method!r}")
    return sums / segments.count.to(acc_dtype)[:, None]
