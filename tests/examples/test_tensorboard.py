"""fairseq-train --tensorboard-logdir records the plugin's td_* scalars (README, "Logging")."""
import glob
import struct

import pytest

from ..conftest import TRAIN_ARGS, run_cli

tensorboardX = pytest.importorskip(
    "tensorboardX", reason="tensorboardX is not installed (`make install` adds it): fairseq then writes no events")


def read_scalars(event_file):
    """{tag: [(step, value)]} from a TensorBoard event file: TFRecords (length, its CRC, an
    Event protobuf, its CRC), parsed with tensorboardX's own protobuf classes."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    scalars = {}
    with open(event_file, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[offset + 8:offset + 12])[0] == masked_crc32c(header)
        record = data[offset + 12:offset + 12 + length]
        assert struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] == masked_crc32c(record)
        offset += 16 + length
        event = Event.FromString(record)
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_td_scalars_reach_tensorboard(data_bin, tmp_path):
    logdir = tmp_path / "tb"
    run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--td-type", "weight", "--td-gamma", "0.5", "--td-alpha", "0.4",
            "--max-update", "3", "--no-save", "--tensorboard-logdir", logdir)
    # fairseq writes one folder per stream: train_inner (every --log-interval updates), train, valid
    files = glob.glob(str(logdir / "train_inner" / "events.out.tfevents.*"))
    assert len(files) == 1, sorted(p.name for p in logdir.rglob("*"))
    scalars = read_scalars(files[0])
    assert [step for step, _ in scalars["td_gamma"]] == [1, 2, 3]
    assert all(value == pytest.approx(0.5) for _, value in scalars["td_gamma"])
    assert all(value == pytest.approx(0.4) for _, value in scalars["td_alpha"])
    # the measured share of targeted weights dropped: about gamma * alpha = 0.2
    assert all(0.1 < value < 0.3 for _, value in scalars["td_drop"])
    assert "loss" in scalars
