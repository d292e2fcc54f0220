"""Read a run back through each tracker's own reader (tests/test_trackers.py): TensorBoard's EventAccumulator and
hparams plugin, MLflow's client, the W&B offline run's transaction log parsed with W&B's own record schema, Trackio's
API and local database. Each returns plain dicts: ``scalars`` {tag: {step: value}}, ``params`` (flat, "/"-joined
keys), ``tags``."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any


def tensorboard_run(log_dir: Path) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    params = {key: getattr(value, value.WhichOneof("kind")) for key, value in hparams.items()}
    return {"scalars": scalars, "params": params}


def mlflow_run(tracking_uri: str, experiment: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    scalars = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
               for key in run.data.metrics}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return {"scalars": scalars, "params": dict(run.data.params), "tags": tags, "status": run.info.status}


#: The framing of a W&B transaction log (``run-<id>.wandb``): LevelDB's log format, 32 KiB blocks of records, each
#: with a 7-byte header (crc32, length, kind), a record split as FIRST, MIDDLE..., LAST or whole as FULL.
WANDB_BLOCK, WANDB_HEADER, WANDB_FULL, WANDB_LAST = 32768, 7, 1, 4


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records (``wandb.proto.wandb_internal_pb2.Record``) of a W&B run file, checksums checked."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:WANDB_HEADER])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    records, chunks, pos = [], [], WANDB_HEADER
    while pos + WANDB_HEADER <= len(data):
        room = WANDB_BLOCK - pos % WANDB_BLOCK
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + WANDB_HEADER])
        if room < WANDB_HEADER or (kind, length) == (0, 0):  # the zero padding at the end of a block
            pos += room
            continue
        body = data[pos + WANDB_HEADER:pos + WANDB_HEADER + length]
        assert zlib.crc32(body, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad checksum at byte {pos}"
        chunks.append(body)
        pos += WANDB_HEADER + length
        if kind in (WANDB_FULL, WANDB_LAST):
            records.append(wandb_internal_pb2.Record.FromString(b"".join(chunks)))
            chunks = []
    return records


def wandb_offline_run(save_dir: Path) -> dict[str, Any]:
    (run_dir,) = (save_dir / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    scalars: dict[str, dict[int, float]] = {}
    config: dict[str, Any] = {}
    tags: list[str] = []
    kinds = []
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        kinds.append(kind)
        if kind == "run":
            tags = list(record.run.tags)
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for key, value in row.items():
                if isinstance(value, int | float):
                    scalars.setdefault(key, {})[int(row["trainer/global_step"])] = value
    return {"scalars": scalars, "params": flatten(config), "tags": tags, "kinds": kinds}


def trackio_run(project: str, name: str) -> dict[str, Any]:
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    (run,) = [r for r in trackio.Api().runs(project) if r.name == name]
    scalars: dict[str, dict[int, float]] = {}
    for row in SQLiteStorage.get_logs(project, name):
        for key, value in row.items():
            if key not in ("step", "timestamp") and isinstance(value, int | float):
                scalars.setdefault(key, {})[row["step"]] = value
    config = dict(run.config)
    return {"scalars": scalars, "params": flatten(config), "tags": config.get("tags")}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys joined by "/"; an empty mapping is a leaf."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
