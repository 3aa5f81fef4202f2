"""Straightforward loop implementations of the TRG-Net losses on random padded batches, the yardstick of
the vectorized ones. Loops are per frame / per segment / per pair on purpose: slow but obvious."""
import torch

from trgnet_fast.data.labels import IGNORE_INDEX as IGN


def scan_published(labels):
    """The published per-frame scan (docs/model.md#aris-segments), literally: a running (label, start) per
    row; at a change of label the running segment is emitted only if the new label is not 255, and the
    new label always starts a new running segment; the final one is emitted only if the row ends with a
    real label. Returns a list of (video, start, end, label); segments labelled 255 (which the published
    code would use to index its K-row tables out of range) are dropped."""
    segs = []
    for n in range(labels.shape[0]):
        row = [int(v) for v in labels[n]]
        cur, start = None, 0
        for t, lab in enumerate(row):
            if lab != cur:
                if cur is not None and lab != IGN:
                    segs.append((n, start, t - 1, cur))
                cur, start = lab, t
        if cur is not None and row[-1] != IGN:
            segs.append((n, start, len(row) - 1, cur))
    return [s for s in segs if s[3] != IGN]


def scan_corrected(labels):
    """Every maximal run of equal labels != 255, per video."""
    segs = []
    for n in range(labels.shape[0]):
        row = [int(v) for v in labels[n]]
        start = None
        for t, v in enumerate(row):
            if start is not None and (v != row[start]):
                segs.append((n, start, t - 1, row[start]))
                start = None
            if start is None and v != IGN:
                start = t
        if start is not None:
            segs.append((n, start, len(row) - 1, row[start]))
    return segs


def slice_means(features, segs):
    """(M, D): mean of features[n, :, start:end+1] per segment."""
    if not segs:
        return features.new_zeros((0, features.shape[1]))
    return torch.stack([features[n, :, s:e + 1].mean(dim=1) for n, s, e, _ in segs])


def kl_rows(pred, target):
    m = pred.shape[0]
    total = pred.new_zeros(())
    for i in range(m):
        q = torch.softmax(10 * target[i], dim=0)
        logp = torch.log_softmax(pred[i], dim=0)
        for j in range(m):
            if q[j] > 0:
                total = total + q[j] * (torch.log(q[j]) - logp[j])
    return total / max(m, 1)


def aris_abs_loop(f, labels, emb, scale):
    m = f.shape[0]
    fn = f / f.norm(dim=1, keepdim=True)
    t = torch.stack([emb[int(lab)] for lab in labels]) if m else emb[:0]
    tn = t / t.norm(dim=1, keepdim=True)
    l_img = scale * fn @ tn.T
    g = torch.zeros(m, m, dtype=f.dtype)
    for i in range(m):
        for j in range(m):
            g[i, j] = float(int(labels[i]) == int(labels[j]))
    return (kl_rows(l_img, g) + kl_rows(l_img.T, g)) / 2


def aris_rel_loop(f, labels, tag):
    m = f.shape[0]
    d = torch.zeros(m, m, dtype=f.dtype)
    for i in range(m):
        for j in range(m):
            d[i, j] = (f[i] - f[j]).norm()
    dmax = d.max() if m else d.new_zeros(())
    p = torch.ones_like(d) if (m == 0 or dmax == 0) else 1 - d / dmax
    sub = torch.zeros(m, m, dtype=f.dtype)
    for i in range(m):
        for j in range(m):
            sub[i, j] = tag[int(labels[i]), int(labels[j])]
    return kl_rows(p, sub)


def gstmse_loop(logits, x, labels, over="time"):
    """GS-TMSE as the published code computes it, one sample and one (class, pair) term at a time:
    compact the sample's valid frames to z (K, T'), a = log_softmax(z[:, 1:]), b = log_softmax(z[:, :-1]),
    both over time ("time", published) or both over classes ("classes")."""
    n, k, _ = logits.shape
    per = []
    for i in range(n):
        idx = [t for t in range(labels.shape[1]) if int(labels[i, t]) != IGN]
        if len(idx) < 2:
            per.append(logits.new_zeros(()))
            continue
        z = logits[i][:, idx]
        s = x[i].reshape(-1, x.shape[-1])[:, idx]
        dim = 1 if over == "time" else 0
        a = torch.log_softmax(z[:, 1:], dim=dim)
        b = torch.log_softmax(z[:, :-1], dim=dim)
        terms = []
        for t in range(len(idx) - 1):
            w = torch.exp(-(s[:, t + 1] - s[:, t]).norm() / 2)
            for c in range(k):
                terms.append(w * torch.clamp((a[c, t] - b[c, t]) ** 2, max=16))
        per.append(torch.stack(terms).mean())
    return torch.stack(per).mean()


def bce_loop(b, boundary, mask, pos_weight):
    n = b.shape[0]
    total = b.new_zeros(())
    for i in range(n):
        vals = []
        for t in range(b.shape[-1]):
            if bool(mask[i, 0, t]):
                z, y = b[i, 0, t], boundary[i, 0, t]
                # -[pw·y·log σ(z) + (1-y)·log(1-σ(z))]
                vals.append(-(pos_weight * y * torch.nn.functional.logsigmoid(z)
                              + (1 - y) * torch.nn.functional.logsigmoid(-z)))
        total = total + torch.stack(vals).mean()
    return total / n


def random_labels(n, t, k, gen, *, pad=True, mid_ignore=False, min_len=1):
    """(N, T) long labels with right padding 255, runs of random length (single frames included),
    optionally 255 runs inside videos; row 0 is full length."""
    labels = torch.full((n, t), IGN, dtype=torch.long)
    lengths = []
    for i in range(n):
        length = t if (i == 0 or not pad) else int(torch.randint(min_len, t + 1, (1,), generator=gen))
        lengths.append(length)
        pos = 0
        while pos < length:
            run = int(torch.randint(1, 6, (1,), generator=gen))
            lab = int(torch.randint(0, k, (1,), generator=gen))
            if mid_ignore and torch.rand((), generator=gen) < 0.15:
                lab = IGN
            labels[i, pos:pos + run] = lab
            pos += run
        labels[i, length:] = IGN
    return labels, torch.tensor(lengths)


