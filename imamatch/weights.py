"""Weights files: safetensors only, with the network configuration stored in the metadata.

Nothing here ever unpickles. A file that is not safetensors, is truncated, or whose tensors do not fit the
network raises :class:`WeightsError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .atomic import atomic_path
from .config import MatcherConfig
from .errors import WeightsError

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (sorted by name)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def atomic_save(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically, with a digest of its tensors in the metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**metadata, "sha256": tensor_digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def save_weights(net: torch.nn.Module, conf: MatcherConfig, path: str | Path, **info: str) -> None:
    """Save ``net``'s state and ``conf`` (plus free-form ``info`` strings) to ``path``."""
    meta = {"format": "imamatch", "config": json.dumps(conf.to_dict()), **info}
    atomic_save(net.state_dict(), path, meta)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], MatcherConfig | None, dict[str, str]]:
    """Read tensors, the stored config (None if absent) and the metadata of a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path} is not a readable safetensors weights file ({e})") from e
    if "sha256" in meta and tensor_digest(tensors) != meta["sha256"]:
        raise WeightsError(f"{path}: tensor checksum mismatch (the file was modified or corrupted)")
    conf = None
    if "config" in meta:
        try:
            conf = MatcherConfig.from_dict(json.loads(meta["config"]))
        except (ValueError, TypeError) as e:
            raise WeightsError(f"{path}: stored configuration is invalid ({e})") from e
    return tensors, conf, meta


def load_into(net: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load ``tensors`` into ``net`` strictly; mismatches raise :class:`WeightsError`."""
    own = net.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or bad:
        raise WeightsError(f"{path} does not fit this network: missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]}, wrong shape {bad[:5]}")
    for k, v in tensors.items():
        if not torch.isfinite(v).all() and v.is_floating_point():
            raise WeightsError(f"{path}: tensor {k} holds NaN or inf")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def export_weights(src: str | Path, dst: str | Path, half: bool = True, **info: str) -> Path:
    """Copy a training checkpoint's weights to ``dst`` for shipping: float tensors stored as float16
    (``half``; loading casts back to float32), config and ``info`` kept in the metadata."""
    tensors, conf, meta = read_weights(src)
    if conf is None:
        raise WeightsError(f"{src} holds no imamatch configuration")
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    atomic_save(tensors, dst, {**meta, **info})
    return Path(dst)
