"""From expectation values to class probabilities, the loss and its gradient.

Binary: ``p(class 1) = (1 - <O>) / 2`` (odd parity is class 1: the parity of all qubits, as VQC reads it when
given a full-parity ``interpret``; its default reads qubit 0 only).
``k`` classes: ``s_c = (1 - <Z_c>) / 2`` and a softmax over ``SCALE * s``. The loss is the mean
cross-entropy over the samples.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-9
SCALE = 6.0  # softmax sharpness for k classes: s_c lives in [0, 1]


def probabilities(evs: np.ndarray, n_classes: int) -> np.ndarray:
    """``evs``: (..., N) for binary, (k, ..., N) for k classes; returns (..., N, classes)."""
    if n_classes == 2:
        p1 = np.clip((1.0 - evs) / 2.0, EPS, 1.0 - EPS)
        return np.stack([1.0 - p1, p1], axis=-1)
    logits = SCALE * (1.0 - np.moveaxis(evs, 0, -1)) / 2.0
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return np.clip(e / e.sum(axis=-1, keepdims=True), EPS, 1.0)


def loss(evs: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean cross-entropy over the last sample axis: (..., N) -> (...)."""
    p = probabilities(evs, n_classes)
    picked = np.take_along_axis(p, np.broadcast_to(y[..., None], (*p.shape[:-1], 1)), axis=-1)[..., 0]
    return np.asarray(-np.log(picked).mean(axis=-1))


def loss_gradient(evs: np.ndarray, shifted: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """d loss / d weights by the parameter-shift rule. ``evs``: the unshifted values, (N,) or (k, N);
    ``shifted``: (W, 2, N) or (k, W, 2, N), the +pi/2 and -pi/2 shift of each weight."""
    p = probabilities(evs, n_classes)
    onehot = np.eye(n_classes)[y]
    if n_classes == 2:
        d_loss_d_ev = -(onehot[:, 1] / p[:, 1] - onehot[:, 0] / p[:, 0]) * -0.5  # (N,)
        d_ev = (shifted[:, 0, :] - shifted[:, 1, :]) / 2.0  # (W, N)
        return np.asarray((d_ev * d_loss_d_ev).mean(axis=-1))
    d_loss_d_logit = (p - onehot).T  # (k, N)
    d_logit_d_ev = -SCALE / 2.0
    d_ev = (shifted[:, :, 0, :] - shifted[:, :, 1, :]) / 2.0  # (k, W, N)
    return np.asarray((d_ev * (d_loss_d_logit * d_logit_d_ev)[:, None, :]).sum(axis=0).mean(axis=-1))


def predict(evs: np.ndarray, n_classes: int) -> np.ndarray:
    return np.asarray(probabilities(evs, n_classes).argmax(axis=-1))
