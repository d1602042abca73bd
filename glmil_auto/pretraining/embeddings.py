"""Frozen embeddings of preprocessed cases: what a linear probe reads to judge an encoder.

The instance encoder embeds every kept lesion (its multiscale patches and its descriptors), the
global encoder every case's whole volume, exactly as the network sees them in training (the
stored arrays of ``glmil_preprocess``, the descriptors of :func:`instance_descriptors`), in eval
mode and without gradients. The instance encoder treats every lesion on its own (instance
normalisation per patch, no mixing across the bag), so lesions of many cases share one forward
pass, which is what makes embedding a cohort fast; a test checks that this batching, and the
padding of a bag, leave a lesion's embedding unchanged.

    probe_network        a network of the plans: random init (seeded) or with pretrained encoders
    lesion_embeddings    (frame of case_id, label, instance_index; (n_lesions, D) embeddings)
    global_embeddings    (case ids; (n_cases, D) embeddings)
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.preprocessing.storage import load_array, load_properties
from glmil_auto.training.dataloading.bag_collation import instance_descriptors

LESION_COLUMNS = ("case_id", "label", "instance_index")


def probe_network(plans: dict[str, Any], seed: int = 0, checkpoint: str | Path | None = None
                  ) -> tuple[nn.Module, dict[str, Any] | None]:
    """The full network of ``plans``, initialised from ``torch.manual_seed(seed)`` and, with a
    ``checkpoint``, its encoders replaced by the pretrained ones (then also the loader's record of
    the source; the heads stay random, a probe never reads them)."""
    from glmil_auto.model import build_network
    from glmil_auto.model.pretrained_weights import load_pretrained_encoders

    torch.manual_seed(seed)
    network = build_network(plans)
    record = load_pretrained_encoders(network, checkpoint, plans) if checkpoint is not None else None
    return network.eval(), record


@contextmanager
def _frozen(module: nn.Module, device: str | torch.device) -> Iterator[nn.Module]:
    """``module`` on ``device`` in eval mode without gradients; its training flag is restored after."""
    training = module.training
    module.to(device).eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(training)


def _encoder(network: nn.Module, name: str) -> nn.Module:
    encoder = getattr(network, name, None)
    if encoder is None:
        raise ValueError(f"the network has no {name} (built for an ablation without that branch?)")
    return encoder


def _kept_lesions(properties: dict[str, Any]) -> list[dict[str, Any]]:
    kept = [lesion for lesion in properties.get("lesions", []) if lesion.get("kept")]
    return sorted(kept, key=lambda lesion: int(lesion["instance_index"]))


REPRESENTATIONS = ("embedding", "image_features")


def _check_representation(representation: str) -> None:
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")


def lesion_embeddings(network: nn.Module, folder: Path, cases: list[str], device: str | torch.device = "cpu",
                      batch_lesions: int = 64, representation: str = "embedding") -> tuple[pd.DataFrame, np.ndarray]:
    """The instance embedding of every kept lesion of ``cases`` in the preprocessed ``folder``
    (``<plans>/<split>``): a frame with one row per lesion (``case_id``, ``label`` = preprocessing's
    component label, ``instance_index``; cases in the given order, lesions by instance index) and
    the (n_lesions, embedding_dim) float32 embeddings in the frame's row order.

    Up to ``batch_lesions`` lesions, of any cases, go through the encoder as one bag. The encoder
    is moved to ``device``. ``representation="image_features"``: the CNN's summary before the
    descriptors join (``InstanceEncoder.patch_summary``, what contrastive pretraining trains)."""
    _check_representation(representation)
    if batch_lesions < 1:
        raise ValueError(f"batch_lesions must be >= 1, got {batch_lesions}")
    folder = Path(folder)
    rows: list[dict[str, Any]] = []
    chunks: list[np.ndarray] = []
    queue: list[tuple[np.ndarray, np.ndarray]] = []  # (patches, descriptors) not yet encoded
    queued = 0
    with _frozen(_encoder(network, "instance_encoder"), device) as encoder:

        def encode(patches: np.ndarray, descriptors: np.ndarray) -> None:
            x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))[None].to(device)
            d = torch.from_numpy(np.ascontiguousarray(descriptors, dtype=np.float32))[None].to(device)
            mask = torch.ones((1, x.shape[1]), dtype=torch.bool, device=device)
            out = encoder.patch_summary(x[0]) if representation == "image_features" else encoder(x, d, mask)[0]
            chunks.append(out.float().cpu().numpy())

        for case in cases:
            properties = load_properties(folder, case)
            descriptors = instance_descriptors(properties, case)
            kept = _kept_lesions(properties)
            if not kept:
                continue
            local = load_array(folder, case, "local")
            if local.shape[0] != len(kept):
                raise DatasetError(error(f"the stored lesion patches hold {local.shape[0]} instances, the properties "
                                         f"{len(kept)} kept lesions: re-run glmil_preprocess", case))
            rows.extend({"case_id": case, "label": int(lesion["label"]), "instance_index": int(lesion["instance_index"])}
                        for lesion in kept)
            queue.append((local, descriptors))
            queued += len(kept)
            while queued >= batch_lesions:
                patches = np.concatenate([q[0] for q in queue])
                described = np.concatenate([q[1] for q in queue])
                encode(patches[:batch_lesions], described[:batch_lesions])
                queue = [(patches[batch_lesions:], described[batch_lesions:])]
                queued -= batch_lesions
        if queued:
            encode(np.concatenate([q[0] for q in queue]), np.concatenate([q[1] for q in queue]))
    width = int(getattr(network.instance_encoder, "embedding_dim", 0))
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, width), dtype=np.float32)
    return pd.DataFrame(rows, columns=list(LESION_COLUMNS)), embeddings


def global_embeddings(network: nn.Module, folder: Path, cases: list[str], device: str | torch.device = "cpu",
                      batch: int = 8, representation: str = "embedding") -> tuple[list[str], np.ndarray]:
    """The global embedding of every case's stored volume (``<case>_global.b2nd``, (C+1, Z, Y, X)):
    the case ids in the given order and their (n_cases, embedding_dim) float32 embeddings, ``batch``
    cases per forward pass. The encoder is moved to ``device``. ``representation="image_features"``:
    the pooled stage features before the lesion burden joins (``pooled_features``)."""
    _check_representation(representation)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    folder = Path(folder)
    chunks = []
    with _frozen(_encoder(network, "global_encoder"), device) as encoder:
        for start in range(0, len(cases), batch):
            volumes = np.stack([load_array(folder, case, "global") for case in cases[start:start + batch]])
            x = torch.from_numpy(volumes.astype(np.float32, copy=False)).to(device)
            out = encoder.pooled_features(x) if representation == "image_features" else encoder(x)
            chunks.append(out.float().cpu().numpy())
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    return list(cases), embeddings
