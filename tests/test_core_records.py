"""Framing: byte-identical to TensorFlow's TFRecordWriter, CRCs that TF verifies."""

from __future__ import annotations

import os
import struct

import google_crc32c
import pytest

from asyncsummary._records import frame_record, frame_records, masked_crc32c

from .readers import tb_records, tf_records

PAYLOADS = [b"", b"x", b"hello world", bytes(range(256)) * 40, os.urandom(70_000), b"\x00" * 3]


def test_masked_crc_matches_definition():
    for data in PAYLOADS:
        crc = google_crc32c.value(data)
        assert masked_crc32c(data) == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_frame_layout():
    data = b"payload"
    record = frame_record(data)
    assert struct.unpack("<Q", record[:8])[0] == len(data)
    assert struct.unpack("<I", record[8:12])[0] == masked_crc32c(record[:8])
    assert record[12:-4] == data
    assert struct.unpack("<I", record[-4:])[0] == masked_crc32c(data)


def test_frame_records_equals_frame_record():
    out: list[bytes] = []
    frame_records(PAYLOADS, out)
    assert b"".join(out) == b"".join(frame_record(p) for p in PAYLOADS)


@pytest.mark.tf
def test_byte_identical_to_tf_record_writer(tmp_path):
    import tensorflow as tf

    theirs = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for data in PAYLOADS:
            writer.write(data)
    assert theirs.read_bytes() == b"".join(frame_record(p) for p in PAYLOADS)


@pytest.mark.tf
def test_tf_reads_our_records_with_crc_checks(tmp_path):
    path = tmp_path / "ours.tfrecord"
    path.write_bytes(b"".join(frame_record(p) for p in PAYLOADS))
    assert tf_records(str(path)) == PAYLOADS


@pytest.mark.tf
def test_corrupted_record_is_rejected_by_tf(tmp_path):
    """The CRC is really checked by the reader we rely on (so the tests above can fail)."""
    import tensorflow as tf

    record = bytearray(frame_record(b"some payload"))
    record[14] ^= 0xFF
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(bytes(record))
    with pytest.raises(tf.errors.DataLossError):
        tf_records(str(path))


def test_tensorboard_reads_our_records_with_crc_checks(tmp_path):
    """TensorBoard's own record reader (its pure-Python one where TensorFlow is not
    installed, as in the core suite; TF's where it is) reads every record back."""
    path = tmp_path / "ours.tfrecord"
    path.write_bytes(b"".join(frame_record(p) for p in PAYLOADS))
    assert tb_records(str(path)) == PAYLOADS


@pytest.mark.parametrize("byte", [3, 9, 14], ids=["length", "length-crc", "data"])
def test_tensorboard_stops_at_a_corrupted_record(tmp_path, byte):
    """A flipped byte in the second record's length, its CRC or its data: TensorBoard's
    reader yields the first record only, never the damaged one (so the read-backs of
    the core suite can fail)."""
    second = bytearray(frame_record(b"some payload"))
    second[byte] ^= 0xFF
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(frame_record(b"first") + bytes(second) + frame_record(b"third"))
    assert tb_records(str(path)) == [b"first"]
