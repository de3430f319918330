"""Another local user attacks a shared spool root while the victim logs to S3.

The three attacks that worked on the spool's first layout, replayed by a real second
local user: a process running as another uid (``subprocess.run(user=...)``, only
``/bin/sh``, no library of ours) plants files in a sticky, world-writable spool root,
as ``/tmp`` or ``/scratch`` are. The victim, this test process (root in CI: the user
with the most to lose), then writes to an ``s3://`` logdir on a loopback S3 server
(moto, server mode, started and stopped here) or runs ``upload-spool`` from the
command line, as a user would after a crash. Each attack must be refused with an
error that names the path and why, and nothing of the attacker's may reach the
bucket or a folder only root may write to.

Without root the test cannot act as another user; it then skips with its reason,
and fails under ``CI=true``, where it must run. The same checks with files planted
by root itself (``chown``), and the spool's inner checks, are in
``test_remote_spool_security.py``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid

import pytest

from asyncsummary import AsyncSummaryWriter, WriteError
from asyncsummary._spool import logdir_key, user_folder_name
from asyncsummary.remote import RemoteSinkFactory, UnsafeSpoolError, upload_spool

from .must_run import cannot_run_here
from .spool_layout import DEAD_EVENT_FILE, records

BUCKET = "asyncsummary-attacked"
ATTACKER = 12345
DEAD = "w-4242-00000000deadbeef"


@pytest.fixture(autouse=True)
def _as_root_only():
    if os.getuid() != 0:
        cannot_run_here("acting as a second local user needs root (setuid in a child process)")


@pytest.fixture
def shared():
    """A spool root every local user may write to: sticky and world-writable, like
    /tmp, and reachable by the attacker (pytest's tmp_path is root's alone)."""
    root = tempfile.mkdtemp(prefix="asyncsummary-shared-spool-")
    os.chmod(root, 0o1777)
    yield root
    shutil.rmtree(root)


@pytest.fixture
def root_only(tmp_path):
    """A folder only root may write to: nothing of the attacker's may land in it."""
    folder = tmp_path / "root-only"
    folder.mkdir(mode=0o700)
    return folder


@pytest.fixture
def url(s3, monkeypatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}/victim-{uuid.uuid4().hex[:12]}"


def _attacker(script: str, *args: str, stdin: bytes = b"", cwd: str) -> None:
    """Run a shell script as the attacker: another uid, no supplementary groups."""
    subprocess.run(
        ["/bin/sh", "-ec", script, "attacker", *args],
        input=stdin,
        cwd=cwd,
        user=ATTACKER,
        group=ATTACKER,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "HOME": cwd, "LC_ALL": "C"},
        check=True,
        capture_output=True,
        timeout=30,
    )


def _plant_dead_writer(shared: str, folder: str, *, lock: str | None = None) -> None:
    """As the attacker: a dead writer's folder at ``folder`` (relative to ``shared``),
    as the spool lays one out, with a planted segment; ``lock`` a symlink target
    instead of a lock file. Every folder on the way is the attacker's, open to all."""
    _attacker('mkdir -p "$1" && chmod -R a+rwx "$1"', folder, cwd=shared)
    _attacker(
        'cat > "$1/0000000000.seg"',
        folder,
        stdin=records("planted", [666], header=True),
        cwd=shared,
    )
    if lock is None:
        _attacker('printf %s "$2" > "$1/lock"', folder, DEAD_EVENT_FILE, cwd=shared)
    else:
        _attacker('ln -s "$2" "$1/lock"', folder, lock, cwd=shared)
    planted = os.path.join(shared, folder, "0000000000.seg")
    assert os.lstat(planted).st_uid == ATTACKER  # really another user's


def _objects(s3, url: str) -> dict[str, bytes]:
    return s3.objects(BUCKET, url.split(f"s3://{BUCKET}/", 1)[1] + "/")


def _write(s3, url: str, shared: str) -> AsyncSummaryWriter:
    # The endpoint as an option, not only in the environment: fsspec caches its
    # filesystems by their options, and other modules' S3 servers came and went.
    factory = RemoteSinkFactory(s3.storage_options(), spool_dir=shared)
    writer = AsyncSummaryWriter(url, flush_secs=3600, sink_factory=factory)
    writer.add_scalar("mine", 1.0, 7)
    return writer


def _upload_spool_command(shared: str, *logdirs: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncsummary.remote",
            "upload-spool",
            "--spool-dir",
            shared,
            *logdirs,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


# ------------------------------------------- 1. a planted segment in the victim's run
def test_a_segment_planted_by_another_user_never_reaches_the_victims_run(s3, url, shared):
    key = logdir_key(url)
    # Where the first layout kept every user's folders of this logdir, and the
    # attacker's own user folder: the victim never looks in either.
    _plant_dead_writer(shared, f"{key}/{DEAD}")
    _plant_dead_writer(shared, f"uid-{ATTACKER}/{key}/{DEAD}")
    with _write(s3, url, shared) as writer:
        writer.flush(timeout=30)
    objects = _objects(s3, url)
    assert len(objects) == 1
    (data,) = objects.values()
    assert b"mine" in data and b"planted" not in data
    assert upload_spool([url], spool_dir=shared) == []
    # The victim's own folder is its alone: the attacker cannot plant in it now.
    mine = os.path.join(shared, user_folder_name())
    assert stat.S_IMODE(os.lstat(mine).st_mode) == 0o700
    with pytest.raises(subprocess.CalledProcessError) as denied:
        _attacker('mkdir "$1/x"', user_folder_name(), cwd=shared)
    assert b"Permission denied" in denied.value.stderr


def test_a_user_folder_made_by_another_user_before_the_victim_is_refused(s3, url, shared):
    # The attacker makes the victim's user folder first, with a dead writer in it.
    _plant_dead_writer(shared, f"{user_folder_name()}/{logdir_key(url)}/{DEAD}")
    writer = _write(s3, url, shared)
    with pytest.raises(WriteError, match=f"owned by uid {ATTACKER}") as refused:
        writer.flush(timeout=30)
    assert os.path.join(shared, user_folder_name()) in str(refused.value)  # which folder
    assert "choose a spool_dir of your own" in str(refused.value)  # and what to do
    with pytest.raises(WriteError):
        writer.close(timeout=10)
    assert writer.stats().lost == 1  # counted, not dropped in silence
    assert _objects(s3, url) == {}  # nothing of the attacker's went up
    with pytest.raises(UnsafeSpoolError, match=f"owned by uid {ATTACKER}"):
        upload_spool(spool_dir=shared)
    assert _objects(s3, url) == {}


# ----------------------- 2. a lock symlink makes the victim create a file as root
@pytest.mark.parametrize("user_folder", ["made by the attacker", "a symlink to the attacker's"])
def test_a_planted_lock_symlink_creates_nothing_where_root_alone_writes(
    s3, url, shared, root_only, user_folder
):
    target = root_only / "created-by-the-victim"
    existing = root_only / "roots-file"
    existing.write_bytes(b"root's own")
    key = logdir_key(url)
    if user_folder == "made by the attacker":
        base = user_folder_name()
    else:
        base = "attackers-folder"
        _attacker('ln -s "$1" "$2"', base, user_folder_name(), cwd=shared)
    _plant_dead_writer(shared, f"{base}/{key}/w-1-000000000000000a", lock=str(target))
    _plant_dead_writer(shared, f"{base}/{key}/w-1-000000000000000b", lock=str(existing))
    # The first layout's place too, in the shared root itself.
    _plant_dead_writer(shared, f"{key}/w-1-000000000000000c", lock=str(target))
    reason = f"owned by uid {ATTACKER}" if base == user_folder_name() else "symbolic link"
    writer = _write(s3, url, shared)
    with pytest.raises(WriteError, match=reason):
        writer.flush(timeout=30)
    with pytest.raises(WriteError):
        writer.close(timeout=10)
    result = _upload_spool_command(shared, url)
    assert result.returncode == 1 and reason in result.stderr
    assert sorted(os.listdir(root_only)) == ["roots-file"]  # nothing created through a link
    assert existing.read_bytes() == b"root's own"  # nothing truncated or written
    assert _objects(s3, url) == {}


# ------------- 3. a forged logdir file makes upload-spool write into root's folder
def test_upload_spool_writes_no_forged_logdir_into_a_folder_of_roots(s3, url, shared, root_only):
    roots_run = f"file://{root_only}/run"
    user = user_folder_name()
    # Forged logdir files: one in a folder named for another URL, one in the folder
    # of the very URL it names (it hashes right: only ownership protects), one
    # naming the victim's S3 run; and the same in the first layout's place.
    for folder, named in (
        (f"{user}/{logdir_key('memory://runs/innocent')}", roots_run),
        (f"{user}/{logdir_key(roots_run)}", roots_run),
        (f"{user}/{logdir_key(url)}", url),
        (logdir_key(roots_run), roots_run),
    ):
        _plant_dead_writer(shared, f"{folder}/{DEAD}")
        _attacker('printf %s "$2" > "$1/logdir"', folder, named, cwd=shared)
    result = _upload_spool_command(shared)
    assert result.returncode == 1
    assert f"owned by uid {ATTACKER}" in result.stderr
    assert os.path.join(shared, user) in result.stderr
    assert result.stdout == ""  # nothing uploaded
    named = _upload_spool_command(shared, roots_run, url)  # naming the logdirs changes nothing
    assert named.returncode == 1 and f"owned by uid {ATTACKER}" in named.stderr
    assert os.listdir(root_only) == []
    assert _objects(s3, url) == {}
