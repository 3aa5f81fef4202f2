"""TRGNetLoss: the full published training loss (docs/model.md#total-loss), vectorized on the device."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trgnet_fast.backend import model_backend, requested_backend
from trgnet_fast.data.labels import IGNORE_INDEX
from trgnet_fast.losses.segments import segment_means
from trgnet_fast.losses.targets import LossTargetBuilder, LossTargets
from trgnet_fast.losses.terms import (aris_absolute, aris_relative, boundary_bce, cross_entropy, frame_log_probs,
                                      gs_tmse, gs_tmse_weights)
from trgnet_fast.model.text_heads import TextFeatures
from trgnet_fast.ops.aris_losses import aris_losses
from trgnet_fast.ops.aris_losses.autograd import OP_NAME as ARIS_LOSSES_OP
from trgnet_fast.ops.frame_losses import frame_losses
from trgnet_fast.ops.frame_losses.autograd import OP_NAME as FRAME_LOSSES_OP


def _check_tensor(name: str, value, dim: int | None = None) -> torch.Tensor:
    if not torch.is_tensor(value):
        raise ValueError(f"{name}: expected a tensor, got {type(value).__name__}")
    if dim is not None and value.dim() != dim:
        raise ValueError(f"{name}: expected {dim} dimensions, got shape {tuple(value.shape)}")
    return value


def _floating(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class TRGNetLoss(nn.Module):
    """Published TRG-Net training loss.

    total = ce + gstmse_weight·gstmse + lambda_b·boundary + aris_abs_weight·aris_abs
            + aris_rel_weight·aris_rel, where (returned unweighted)
      ce       = mean over logit stages of CE (½·Σ for the published two stages),
      gstmse   = mean over logit stages of GS-TMSE,
      boundary = mean over boundary stages of the per-sample-mean BCE with pos_weight,
      aris_abs = (KL(L_img, G) + KL(L_txt, G)) / 2 on the encoder feature head e0 only,
      aris_rel = KL(P, TAG_sub) on e0's segment means.

    Args:
        action_embeddings: (K, D) text embeddings of the action classes (D = text_dim of the model).
        action_graph: (K, K) TAG.
        pos_weight: BCE positive weight (see ``boundary_pos_weight``).
        lambda_b, gstmse_weight, aris_abs_weight, aris_rel_weight: term weights (published 0.1, 1, 0.8, 1).
        use_aris_abs, use_aris_rel: switch the ARIS terms off (reported as 0, no segment work if both off).
        published_quirks: True (default) reproduces the published objective: GS-TMSE's log-softmax runs
            over time (docs/model.md#gs-tmse) and the ARIS segments follow the published scan, which drops
            the last segment of every padded video and the segment before every ignored run
            (docs/model.md#aris-segments). False: class-axis GS-TMSE and every real segment.
        class_weight: optional (K,) CE class weights (published: none).
        backend: of the per-frame terms (CE, GS-TMSE, BCE) and the ARIS terms: "torch" runs them as above,
            "cuda" / "triton" as the fused ``frame_losses`` op (docs/kernels.md#frame_losses) and, with both ARIS terms
            on, the fused ``aris_losses`` op (docs/kernels.md#aris_losses; one term alone keeps the PyTorch code),
            None / "auto" as ``trgnet_fast.backend`` resolves it on the logits' device (the model's rule,
            ``model_backend``).
    """

    def __init__(self, action_embeddings: torch.Tensor, action_graph: torch.Tensor, pos_weight: float,
                 lambda_b: float = 0.1, gstmse_weight: float = 1.0, aris_abs_weight: float = 0.8,
                 aris_rel_weight: float = 1.0, use_aris_abs: bool = True, use_aris_rel: bool = True,
                 published_quirks: bool = True, class_weight: torch.Tensor | None = None,
                 ignore_index: int = IGNORE_INDEX, backend: str | None = None):
        super().__init__()
        if backend is not None:
            requested_backend(backend)  # raises ValueError for an unknown name
        self.backend = backend
        action_embeddings = torch.as_tensor(action_embeddings)
        action_graph = torch.as_tensor(action_graph)
        if action_embeddings.dim() != 2:
            raise ValueError(f"action_embeddings: expected shape (K, D), got {tuple(action_embeddings.shape)}")
        k = action_embeddings.shape[0]
        if tuple(action_graph.shape) != (k, k):
            raise ValueError(f"action_graph: expected shape ({k}, {k}), got {tuple(action_graph.shape)}")
        if class_weight is not None:
            class_weight = torch.as_tensor(class_weight, dtype=torch.float32)
            if tuple(class_weight.shape) != (k,):
                raise ValueError(f"class_weight: expected shape ({k},), got {tuple(class_weight.shape)}")
        pos_weight = float(pos_weight)
        if not pos_weight > 0:
            raise ValueError(f"pos_weight: expected a positive number, got {pos_weight}")
        # kept in the given floating dtype (float32 for others); the terms compute in float32/float64
        self.register_buffer("action_embeddings", _floating(action_embeddings).clone())
        self.register_buffer("action_graph", _floating(action_graph).clone())
        # float64, i.e. unrounded: each BCE casts it to its compute dtype, so a float64 loss uses the
        # exact value and a float32 one the same float32 rounding as the logits
        self.register_buffer("pos_weight", torch.tensor(pos_weight, dtype=torch.float64))
        self.register_buffer("class_weight", class_weight)
        # derived once instead of per step (not state: rebuilt after a dtype or device change): t̂ of every class,
        # and pos_weight's float32 rounding for float32 losses
        self.register_buffer("unit_action_embeddings", F.normalize(self.action_embeddings, dim=1), persistent=False)
        self.register_buffer("pos_weight_float32", self.pos_weight.float(), persistent=False)
        self.lambda_b = float(lambda_b)
        self.gstmse_weight = float(gstmse_weight)
        self.aris_abs_weight = float(aris_abs_weight)
        self.aris_rel_weight = float(aris_rel_weight)
        self.use_aris_abs = bool(use_aris_abs)
        self.use_aris_rel = bool(use_aris_rel)
        self.published_quirks = bool(published_quirks)
        self.ignore_index = int(ignore_index)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.unit_action_embeddings = F.normalize(self.action_embeddings, dim=1)
        self.pos_weight_float32 = self.pos_weight.float()
        return self

    @property
    def num_classes(self) -> int:
        return self.action_embeddings.shape[0]

    def _validate(self, outputs, x, labels, boundary, mask):
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 4:
            raise ValueError("outputs: expected the train-mode tuple (logits list, boundary list, "
                             "feature list, logit_scale)")
        logits, bounds, feats, logit_scale = outputs
        for name, seq in (("outputs[0] (logits)", logits), ("outputs[1] (boundaries)", bounds),
                          ("outputs[2] (features)", feats)):
            if not isinstance(seq, Sequence) or len(seq) == 0:
                raise ValueError(f"{name}: expected a non-empty list of tensors")
        labels = _check_tensor("labels", labels, 2)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels: expected an integer dtype, got {labels.dtype}")
        if x is not None:
            _check_tensor("x", x, 4)
        _check_tensor("boundary", boundary, 3)
        _check_tensor("mask", mask, 3)
        _check_tensor("outputs[0][0] (logits)", logits[0], 3)
        # (N, T) agreed on by most arguments, so that the odd one out is the one named
        candidates = [(labels.shape[0], labels.shape[1]), (boundary.shape[0], boundary.shape[-1]),
                      (mask.shape[0], mask.shape[-1]), (logits[0].shape[0], logits[0].shape[-1])]
        if x is not None:
            candidates.append((x.shape[0], x.shape[-1]))
        n, t = max(candidates, key=candidates.count)
        if tuple(labels.shape) != (n, t):
            raise ValueError(f"labels: expected shape {(n, t)}, got {tuple(labels.shape)}")
        k = self.num_classes
        for i, z in enumerate(logits):
            _check_tensor(f"outputs[0][{i}] (logits)", z, 3)
            if tuple(z.shape) != (n, k, t):
                raise ValueError(f"outputs[0][{i}] (logits): expected shape {(n, k, t)}, got {tuple(z.shape)}")
        for i, b in enumerate(bounds):
            _check_tensor(f"outputs[1][{i}] (boundaries)", b, 3)
            if tuple(b.shape) != (n, 1, t):
                raise ValueError(f"outputs[1][{i}] (boundaries): expected shape {(n, 1, t)}, "
                                 f"got {tuple(b.shape)}")
        d = self.action_embeddings.shape[1]
        if isinstance(feats[0], TextFeatures):  # the head's input and the head: e0 = weight · hidden + bias
            hidden = _check_tensor("outputs[2][0].hidden (features)", feats[0].hidden, 3)
            weight = _check_tensor("outputs[2][0].weight (features)", feats[0].weight, 2)
            if hidden.shape[0] != n or hidden.shape[2] != t:
                raise ValueError(f"outputs[2][0].hidden (features): expected shape (N={n}, C, T={t}), got "
                                 f"{tuple(hidden.shape)}")
            if tuple(weight.shape) != (d, hidden.shape[1]):
                raise ValueError(f"outputs[2][0].weight (features): expected shape (D, C) = {(d, hidden.shape[1])}, "
                                 f"got {tuple(weight.shape)}")
        else:
            e0 = _check_tensor("outputs[2][0] (features)", feats[0], 3)
            if tuple(e0.shape) != (n, d, t):
                raise ValueError(f"outputs[2][0] (features): expected shape {(n, d, t)}, got {tuple(e0.shape)}")
        _check_tensor("outputs[3] (logit_scale)", logit_scale)
        if logit_scale.numel() != 1:
            raise ValueError(f"outputs[3] (logit_scale): expected one element, got shape "
                             f"{tuple(logit_scale.shape)}")
        if x is not None and (x.shape[0] != n or x.shape[-1] != t):
            raise ValueError(f"x: expected shape (N={n}, C, V, T={t}), got {tuple(x.shape)}")
        if tuple(boundary.shape) != (n, 1, t):
            raise ValueError(f"boundary: expected shape {(n, 1, t)}, got {tuple(boundary.shape)}")
        if tuple(mask.shape) != (n, 1, t):
            raise ValueError(f"mask: expected shape {(n, 1, t)}, got {tuple(mask.shape)}")

    def target_builder(self, dtype: torch.dtype = torch.float32) -> LossTargetBuilder:
        """The builder of this loss's labels-only part (:class:`LossTargets`), for the training collate; dtype of
        its float parts (the loss's compute dtype: float32, or float64 for float64 outputs)."""
        return LossTargetBuilder(self.action_graph if self.use_aris_rel else None, self.published_quirks,
                                 self.ignore_index, self.use_aris_abs, self.use_aris_rel, dtype, self.class_weight)

    def _check_targets(self, targets, labels: torch.Tensor) -> None:
        if not isinstance(targets, LossTargets):
            raise ValueError(f"targets: expected LossTargets (TRGNetLoss.target_builder()), got {type(targets).__name__}")
        n, t = labels.shape
        next_frame = targets.pairs.next_frame
        if tuple(next_frame.shape) != (n, 1, t) or next_frame.device != labels.device:
            raise ValueError(f"targets: expected the targets of labels of shape {(n, t)} on {labels.device}, got "
                             f"shape {tuple(next_frame.shape[::2])} on {next_frame.device}")
        weight = targets.pair_weight
        if weight is not None and (tuple(weight.shape) != (n, t) or weight.device != labels.device):
            raise ValueError(f"targets: expected pair weights of shape {(n, t)} on {labels.device}, got shape "
                             f"{tuple(weight.shape)} on {weight.device}")
        if (targets.segments is None) != (not (self.use_aris_abs or self.use_aris_rel)) or \
                (targets.absolute is None) == self.use_aris_abs or (targets.relative is None) == self.use_aris_rel:
            raise ValueError("targets: built for other ARIS switches than this loss's (use target_builder())")

    def _frame_terms(self, z, b, labels, boundary, mask, targets: LossTargets):
        """CE, GS-TMSE and BCE of the stacked stages z (S, N, K, T), b (R, N, 1, T) in plain PyTorch."""
        log_probs = frame_log_probs(z)  # shared by CE and the class-axis GS-TMSE
        ce = cross_entropy(z, labels.expand(z.shape[0], *labels.shape).flatten(0, 1), self.class_weight,
                           self.ignore_index, log_probs=log_probs.flatten(0, 1))
        gst = gs_tmse(z, None, labels, ignore_index=self.ignore_index,
                      log_softmax_over="time" if self.published_quirks else "classes", log_probs=log_probs,
                      pairs=targets.pairs, weights=targets.pair_weight)
        pos_weight = self.pos_weight_float32 if b.dtype == torch.float32 else self.pos_weight
        return ce, gst, boundary_bce(b, boundary, mask, pos_weight, targets.boundary_weight)

    def _fused_frame_terms(self, z, b, labels, boundary, targets: LossTargets, backend: str):
        """The same three terms as one fused op (``frame_losses``, one kernel pass each way on ``backend``): the
        weights from ``targets``, all in the compute dtype."""
        acc = torch.float64 if z.dtype == torch.float64 else torch.float32
        pairs = targets.pairs
        pos_weight = self.pos_weight if acc == torch.float64 else self.pos_weight_float32
        terms = frame_losses(z, labels, targets.ce_weight.to(acc), pairs.next_frame[:, 0], pairs.previous_frame,
                             # squeeze, not [:, :, 0]: a select's backward is one more op (a zero-fill)
                             targets.pair_weight.to(acc), b.squeeze(2), boundary[:, 0].to(acc),
                             targets.boundary_weight[:, 0].to(acc), pos_weight.reshape(1),
                             time_axis=self.published_quirks, backend=backend)
        return terms.unbind(0)

    def _unit_embeddings(self, dtype: torch.dtype) -> torch.Tensor:
        """t̂ (K, D) in the compute dtype ``dtype``: the stored rows when they are in it, else normalised in it."""
        unit = self.unit_action_embeddings
        return unit if unit.dtype == dtype else F.normalize(self.action_embeddings.to(dtype), dim=1)

    def _fused_aris_terms(self, e0, logit_scale, targets: LossTargets, backend: str):
        """Both ARIS terms as one fused op (``aris_losses``, docs/kernels.md#aris_losses) on ``backend``: the segment
        means, the similarities and both KL divergences, from the target builder's slots and KL targets. e0: (N, D, T),
        or ``TextFeatures`` (the op applies the head to the segment means of its input)."""
        head = {}
        if isinstance(e0, TextFeatures):
            e0, head = e0.hidden, {"head_weight": e0.weight, "head_bias": e0.bias}
        unit = self._unit_embeddings(torch.float64 if e0.dtype == torch.float64 else torch.float32)
        segs, absolute, relative = targets.segments, targets.absolute, targets.relative
        terms = aris_losses(e0, segs.frame_segment, segs.video, segs.start, segs.count, segs.valid, segs.label, unit,
                            logit_scale, absolute.weight, absolute.log_weight, relative.weight, relative.log_weight,
                            **head, backend=backend)
        return terms.unbind(0)

    def forward(self, outputs, x: torch.Tensor, labels: torch.Tensor, boundary: torch.Tensor,
                mask: torch.Tensor, max_segments: int | None = None,
                targets: LossTargets | None = None) -> dict[str, torch.Tensor]:
        """outputs: the model's train-mode tuple ([logits (N,K,T)...], [b (N,1,T)...], [e (N,D,T) or
        ``TextFeatures`` (a head with its (N,C,T) input, docs/model.md#deferred-text-heads)...], logit_scale (1,));
        x: (N, C, V, T) (augmented) model input, GS-TMSE's similarity source, or None when
        ``targets`` carry its pair weights (the training collate's do); labels: (N, T) long, 255 = ignore;
        boundary: (N, 1, T) 0/1 float; mask: (N, 1, T) bool or 0/1; max_segments: None, or a static bound
        on the ARIS segments (the collate's ``max_segments``, ``segment_capacity``): then nothing in the loss
        waits for the device (``extract_segments``); the value is the same. targets: the labels-only part built
        beforehand (``target_builder()(labels, mask, max_segments, x)``, the training collate's ``loss_targets``),
        on the labels' device; None builds it here.
        Returns {total, ce, gstmse, boundary, aris_abs, aris_rel}: 0-d float32 tensors."""
        self._validate(outputs, x, labels, boundary, mask)
        logits, bounds, feats, logit_scale = outputs
        labels = labels.long()
        if targets is None:
            dtype = torch.float64 if logits[0].dtype == torch.float64 else torch.float32
            if x is None:
                raise ValueError("x: needed (the GS-TMSE similarity source) when no targets are given")
            targets = self.target_builder(dtype)(labels, mask, max_segments, x)
        else:
            self._check_targets(targets, labels)
            if targets.pair_weight is None:  # built without x: the pair weights from the loss's x
                if x is None:
                    raise ValueError("x: needed (the GS-TMSE similarity source) when the targets carry no pair "
                                     "weights (built without x)")
                targets = targets._replace(pair_weight=gs_tmse_weights(x, targets.pairs))
        # the stages as one (S, N, ...) batch: every term is a mean over samples (CE: over frames, the same frames in
        # every stage), so the mean over stages is the term of the stacked batch, in a few ops
        z = torch.stack(list(logits))
        b = torch.stack(list(bounds))
        impl = model_backend(FRAME_LOSSES_OP, self.backend, z.device.type)
        if impl == "torch":
            ce, gst, bce = self._frame_terms(z, b, labels, boundary, mask, targets)
        else:
            ce, gst, bce = self._fused_frame_terms(z, b, labels, boundary, targets, impl)

        terms = [(ce, 1.0), (gst, self.gstmse_weight), (bce, self.lambda_b)]
        aris_abs = aris_rel = None
        aris_impl = model_backend(ARIS_LOSSES_OP, self.backend, z.device.type)
        if self.use_aris_abs and self.use_aris_rel and aris_impl != "torch":
            aris_abs, aris_rel = self._fused_aris_terms(feats[0], logit_scale, targets, aris_impl)
            terms += [(aris_abs, self.aris_abs_weight), (aris_rel, self.aris_rel_weight)]
        elif self.use_aris_abs or self.use_aris_rel:
            segs = targets.segments
            e0 = feats[0].materialize() if isinstance(feats[0], TextFeatures) else feats[0]
            f = segment_means(e0, segs)
            if self.use_aris_abs:
                aris_abs = aris_absolute(f, segs.label, self._unit_embeddings(f.dtype), logit_scale, segs.valid,
                                         targets.absolute, embeddings_normalized=True)
                terms.append((aris_abs, self.aris_abs_weight))
            if self.use_aris_rel:
                aris_rel = aris_relative(f, segs.label, self.action_graph, segs.valid, targets.relative,
                                         targets.unpaired)
                terms.append((aris_rel, self.aris_rel_weight))
        total = _weighted_sum(terms)
        zero = None if aris_abs is not None and aris_rel is not None else ce.new_zeros(())
        return {"total": total, "ce": ce, "gstmse": gst, "boundary": bce,
                "aris_abs": zero if aris_abs is None else aris_abs, "aris_rel": zero if aris_rel is None else aris_rel}


def _weighted_sum(terms: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """Σ weight · term, without the multiplications by 1 (exact, and one op fewer each way per term)."""
    total = None
    for term, weight in terms:
        part = term if weight == 1.0 else weight * term
        total = part if total is None else total + part
    return total
