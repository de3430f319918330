"""A spool root in a shared folder, with another local user planting files in it.

The attacker is simulated by what they could leave behind: files and folders in the
shared root, symlinks, folders writable by others, and (the tests run as root, as
in CI) files owned by another uid (``os.chown(..., 12345, 12345)``). Each test
checks what the victim's writer or ``upload-spool`` did: what reached the store
(read back), what was created where it must not be, and the error it gave.
"""

from __future__ import annotations

import os
import stat
import uuid

import pytest

from asyncsummary import AsyncSummaryWriter, WriteError
from asyncsummary._spool import UnsafeSpoolError, logdir_key, user_folder_name
from asyncsummary.remote import (
    RemoteSinkFactory,
    SpoolUploadError,
    main,
    read_events,
    upload_spool,
)

from .spool_layout import DEAD_EVENT_FILE, plant_dead_writer, records, user_logdir_folder

ATTACKER = 12345

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chown to another uid needs root")


@pytest.fixture
def url():
    return f"memory://runs/{uuid.uuid4().hex}"


@pytest.fixture
def shared(tmp_path):
    """A spool root every local user may write to, as /tmp is (sticky, 1777)."""
    root = tmp_path / "shared-spool"
    root.mkdir()
    os.chmod(root, 0o1777)
    return str(root)


@pytest.fixture
def root_only(tmp_path):
    """A folder only root may write to: nothing of the attacker's may land here."""
    folder = tmp_path / "root-only"
    folder.mkdir(mode=0o700)
    return folder


def _tags(url):
    return [(v.tag, e.step) for e in read_events(url) for v in e.summary.value]


def _write_one(url, root, step=7):
    with AsyncSummaryWriter(
        url, flush_secs=3600, sink_factory=RemoteSinkFactory(spool_dir=root)
    ) as w:
        w.add_scalar("mine", 1.0, step)
        w.flush()


def _all_names(root):
    return {
        os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs
    }


# ------------------------------------------------------------ the user folder
def test_each_user_writes_only_in_a_private_folder_of_a_shared_root(url, shared):
    _write_one(url, shared)
    user = os.path.join(shared, user_folder_name())
    st = os.lstat(user)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert os.listdir(shared) == [user_folder_name()]  # nothing else made in the shared root
    key = os.path.join(user, logdir_key(url))
    assert stat.S_IMODE(os.lstat(key).st_mode) == 0o700
    assert _tags(url) == [("mine", 7)]


def test_a_segment_planted_in_the_shared_root_is_never_uploaded(url, shared):
    # Where the spool used to keep a logdir's folders, and where another user's are.
    plant_dead_writer(os.path.join(shared, logdir_key(url)))
    plant_dead_writer(os.path.join(shared, f"uid-{ATTACKER}", logdir_key(url)))
    _write_one(url, shared)
    assert upload_spool([url], spool_dir=shared) == []
    assert _tags(url) == [("mine", 7)]  # the planted event is not in the victim's run


@pytest.mark.parametrize(
    "how", ["writable by others", "a symlink", pytest.param("owned", marks=needs_root)]
)
def test_a_user_folder_that_is_not_the_users_alone_is_refused(url, shared, tmp_path, how):
    user = os.path.join(shared, user_folder_name())
    if how == "a symlink":
        elsewhere = tmp_path / "attackers"
        elsewhere.mkdir(mode=0o700)
        os.symlink(elsewhere, user)
        reason = "symbolic link"
    else:
        os.mkdir(user, 0o700)
        if how == "owned":
            os.chown(user, ATTACKER, ATTACKER)
            reason = f"owned by uid {ATTACKER}"
        else:
            os.chmod(user, 0o777)
            reason = "writable by other users"
    writer = AsyncSummaryWriter(
        url, flush_secs=3600, sink_factory=RemoteSinkFactory(spool_dir=shared)
    )
    writer.add_scalar("mine", 1.0, 1)
    with pytest.raises(WriteError, match=reason) as info:
        writer.flush(timeout=10)
    assert isinstance(info.value.__cause__, UnsafeSpoolError)
    assert user in str(info.value)  # says which folder, and why
    with pytest.raises(WriteError):
        writer.close(timeout=5)
    stats = writer.stats()
    assert stats.lost == 1 and stats.written == 0  # counted, not silently dropped
    assert _tags(url) == []
    with pytest.raises(UnsafeSpoolError, match=reason):
        upload_spool(spool_dir=shared)
    if how == "a symlink":
        assert os.listdir(tmp_path / "attackers") == []  # nothing written through it


# -------------------------------------------------- planted inside the folder
def test_a_lock_symlink_is_never_followed(url, shared, root_only):
    target = root_only / "created-by-victim"
    existing = root_only / "existing"
    existing.write_bytes(b"root's file")
    folder = user_logdir_folder(shared, url)
    for name, to in (("w-1-000000000000000a", target), ("w-1-000000000000000b", existing)):
        planted = plant_dead_writer(folder, name, lock=None)
        os.symlink(to, os.path.join(planted, "lock"))
    _write_one(url, shared)  # the writer warns and leaves them: its own events go up
    with pytest.raises(SpoolUploadError, match="a symbolic link") as refused:
        upload_spool(spool_dir=shared)  # upload-spool, run to recover, says so
    assert refused.value.uploaded == [] and len(refused.value.refused) == 2
    assert all(f"{name}/lock" in r for name, r in zip("ab", refused.value.refused, strict=True))
    assert not target.exists()  # no file created through the link
    assert existing.read_bytes() == b"root's file"
    assert _tags(url) == [("mine", 7)]


def test_planted_segments_symlinks_and_folders_open_to_others_are_not_uploaded(
    url, shared, tmp_path, capsys
):
    folder = user_logdir_folder(shared, url)
    outside = tmp_path / "outside.seg"
    outside.write_bytes(records("planted", [2], True))
    linked = plant_dead_writer(folder, "w-1-0000000000000001", segments={})
    os.symlink(outside, os.path.join(linked, "0000000000.seg"))
    open_folder = plant_dead_writer(folder, "w-1-0000000000000002")
    os.chmod(open_folder, 0o777)
    plant_dead_writer(
        folder, "w-1-0000000000000003", segments={"0000000000.seg": b"not records at all"}
    )
    # A lock naming an event file with a slash in its name.
    plant_dead_writer(folder, "w-1-0000000000000004", lock="../../escape")
    good = plant_dead_writer(
        folder, "w-1-0000000000000005", segments={"0000000000.seg": records("dead", [3], True)}
    )
    # The command, run to recover: the dead writer's own segment goes up, the rest is
    # refused, one line each, and the exit status says so.
    assert main(["upload-spool", url, "--spool-dir", shared]) == 1
    out, err = capsys.readouterr()
    assert out.split() == [f"{url}/{DEAD_EVENT_FILE}.0000000000"]
    assert err.count("error: refused: refusing the spool path") == 4
    assert _tags(url) == [("dead", 3)]
    _write_one(url, shared)
    assert sorted(_tags(url)) == [("dead", 3), ("mine", 7)]  # the dead writer's own, only
    assert not os.path.exists(good)  # recovered and removed
    with pytest.raises(SpoolUploadError) as refused:
        upload_spool([url], spool_dir=shared)
    reasons = sorted(refused.value.refused)
    assert refused.value.uploaded == [] and len(reasons) == 4, reasons
    for folder_name, reason in (
        ("w-1-0000000000000001", "0000000000.seg': a symbolic link"),
        ("w-1-0000000000000002", "writable by other users (mode 777)"),
        ("w-1-0000000000000003", "0000000000.seg': not whole, CRC-valid records"),
        ("w-1-0000000000000004", "its lock names no event file"),
    ):
        assert any(folder_name in r and reason in r for r in reasons), (folder_name, reasons)
    assert sorted(_tags(url)) == [("dead", 3), ("mine", 7)]
    assert os.path.islink(os.path.join(linked, "0000000000.seg"))  # left alone
    assert outside.exists()


@needs_root
def test_files_owned_by_another_user_are_refused(url, shared):
    folder = user_logdir_folder(shared, url)
    mixed = plant_dead_writer(
        folder,
        "w-1-0000000000000001",
        segments={
            "0000000000.seg": records("dead", [1], True),
            "0000000001.seg": records("planted", [2]),
        },
    )
    os.chown(os.path.join(mixed, "0000000001.seg"), ATTACKER, ATTACKER)
    foreign_lock = plant_dead_writer(folder, "w-1-0000000000000002")
    os.chown(os.path.join(foreign_lock, "lock"), ATTACKER, ATTACKER)
    foreign_folder = plant_dead_writer(folder, "w-1-0000000000000003")
    os.chown(foreign_folder, ATTACKER, ATTACKER)
    _write_one(url, shared)
    assert sorted(_tags(url)) == [("dead", 1), ("mine", 7)]
    assert sorted(os.listdir(mixed)) == ["0000000001.seg", "lock"]  # the foreign one stays
    with pytest.raises(SpoolUploadError, match=f"owned by uid {ATTACKER}") as refused:
        upload_spool([url], spool_dir=shared)
    assert len(refused.value.refused) == 3 and refused.value.uploaded == []
    assert sorted(_tags(url)) == [("dead", 1), ("mine", 7)]


def test_a_live_writer_uploads_only_segments_it_wrote(url, shared):
    factory = RemoteSinkFactory(spool_dir=shared, min_segment_secs=3600)
    writer = AsyncSummaryWriter(url, flush_secs=3600, sink_factory=factory)
    writer.add_scalar("mine", 1.0, 1)
    writer.flush()
    (own,) = [d for d, _, names in os.walk(shared) if "lock" in names]
    with open(os.path.join(own, "0000000005.seg"), "wb") as f:  # between its own segments
        f.write(records("planted", [5]))
    writer.add_scalar("mine", 1.0, 2)
    writer.flush()
    writer.close()
    assert _tags(url) == [("mine", 1), ("mine", 2)]


# ---------------------------------------------------------------- upload-spool
def test_upload_spool_never_follows_a_forged_logdir_file(shared, root_only):
    victim_target = f"file://{root_only}/run"
    user = os.path.join(shared, user_folder_name())
    os.makedirs(user, mode=0o700)
    # A logdir file that names another place than its folder was made for.
    forged = os.path.join(user, logdir_key("memory://runs/innocent"))
    os.makedirs(forged, mode=0o700)
    with open(os.path.join(forged, "logdir"), "w") as f:
        f.write(victim_target)
    plant_dead_writer(forged)
    # The old layout's place, in the shared root itself.
    old = os.path.join(shared, logdir_key(victim_target))
    os.makedirs(old)
    with open(os.path.join(old, "logdir"), "w") as f:
        f.write(victim_target)
    plant_dead_writer(old)
    with pytest.raises(SpoolUploadError, match="does not name the URL") as refused:
        upload_spool(spool_dir=shared)
    assert refused.value.uploaded == [] and len(refused.value.refused) == 1
    assert os.listdir(root_only) == []


@needs_root
def test_upload_spool_refuses_a_logdir_file_or_folder_of_another_user(shared, root_only):
    target = f"file://{root_only}/run"
    for owned in ("logdir", "folder"):
        folder = user_logdir_folder(shared, target)  # hashes right: only ownership protects
        plant_dead_writer(folder)
        os.chown(
            os.path.join(folder, "logdir") if owned == "logdir" else folder, ATTACKER, ATTACKER
        )
        with pytest.raises(OSError, match=f"owned by uid {ATTACKER}"):
            upload_spool(spool_dir=shared)
        assert not os.path.exists(root_only / "run")
        os.chown(os.path.join(folder, "logdir"), 0, 0)
        os.chown(folder, 0, 0)
    # The same folder, all the user's own: recovered into the URL it was made for.
    assert upload_spool(spool_dir=shared) == [f"{target}/{DEAD_EVENT_FILE}.0000000000"]
    assert sorted(os.listdir(root_only / "run")) == [f"{DEAD_EVENT_FILE}.0000000000"]
