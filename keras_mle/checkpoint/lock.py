"""The lock that keeps one training run per backup folder.

A run holds an exclusive `fcntl.flock` on the folder's `.keras_mle.lock` file. `flock` locks
belong to an open file description, so another process, and another `open` of the file in this
process, both find it locked. The lock file names its holder, one line:

    <pid> <descriptor> <thread ident> <thread name>

which is what makes a refusal say who holds the folder, and what lets this process recognise
its own lock without any registry: a record naming this process is trusted only once
duplicating its descriptor gives the lock file's open description and re-locking that copy
succeeds (the OS proves the lock is ours). Then:

- a run in another live thread keeps the folder (`BackupInUseError` naming the thread);
- a run of the current thread, or of a thread that has ended, is over (a thread trains one run
  at a time; Keras calls no `on_train_end` after an exception): a new run takes the folder
  over through that duplicate, and the old lock, whose descriptor the record no longer names,
  refuses to write from then on.

The lock file is opened with `O_NOFOLLOW` and must be a regular file: a symbolic link (or
anything else) in its place is refused, so the record is never written through it into a file
of the user's. The lock file is never deleted. Without `fcntl` (Windows) nothing is locked.

Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import weakref

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_FILE", "BackupInUseError", "FolderLock", "folder_locked"]

#: The file a training run locks (`fcntl.flock`) to hold its backup folder; never deleted.
LOCK_FILE = ".keras_mle.lock"


class BackupInUseError(RuntimeError):
    """Another training run holds the backup folder (its lock file is locked)."""


class FolderLock:
    """One training run's exclusive lock on a backup folder.

    Made by `FolderLock.acquire`; released by `close`, when the object is garbage-collected,
    or by the OS when the process ends.

    Attributes:
        directory: The locked folder.
        thread: The thread whose run holds the lock.
        latest_known: For the holder's use: `(identity, metadata)` of the backup file it last
            wrote or verified in the folder, so that it need not read that file again; `None`
            at first.
    """

    def __init__(self, directory: str, fd: int):
        """Wraps a descriptor that holds the lock and is named by the record; see `acquire`."""
        self.directory = directory
        self.thread = threading.current_thread()
        self.latest_known = None
        self._fd = fd
        self._key = _key_of(os.fstat(fd))
        self._release = weakref.finalize(self, _release, fd)

    @classmethod
    def acquire(cls, directory) -> FolderLock:
        """Locks `directory` (created if missing) for a new training run.

        Takes over a lock of this process whose run is over (see the module docstring).

        Raises:
            BackupInUseError: Another process, or a run in another live thread of this process,
                holds the folder.
            ValueError: The lock file is a symbolic link or not a regular file.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        fd, holder = _lock_or_holder(directory)
        if fd is not None:
            _write_record(fd)
            return cls(directory, fd)
        ours = _own_duplicate(directory, holder)
        if ours is None:
            raise _in_use(directory, holder)
        if holder.alive and holder.thread_ident != threading.get_ident():
            os.close(ours)
            raise BackupInUseError(
                f"The backup folder {directory!r} is in use by another training run in this "
                f"process (thread {holder.thread_name}): two runs on one folder would overwrite "
                "each other's backups."
            )
        try:
            _write_record(ours)
            # The old holder may have released between the proof and the record: lock again.
            fcntl.flock(ours, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(ours)
            raise
        return cls(directory, ours)

    @property
    def closed(self) -> bool:
        return not self._release.alive

    def held(self) -> bool:
        """Whether this lock still holds its folder (not closed, taken over, or replaced)."""
        return self._problem() is None

    def check_held(self) -> None:
        """Raises `BackupInUseError` unless this lock still holds its folder."""
        problem = self._problem()
        if problem is not None:
            raise BackupInUseError(
                f"The backup folder {self.directory!r} {problem}: this run writes no more "
                "backups there."
            )

    def close(self) -> None:
        """Releases the lock (unless a later run took it over) and closes its descriptor."""
        self._release()

    def _problem(self):
        if self.closed:
            return "is no longer locked by this run"
        if _key_of_path(os.path.join(self.directory, LOCK_FILE)) != self._key:
            return "or its lock file was removed or replaced while this run held it"
        if not _Holder.read(self._fd).names(self._fd):
            return "was taken over by a later training run"
        return None


@contextlib.contextmanager
def folder_locked(directory, lock: FolderLock | None = None):
    """Holds `directory`'s lock for a block of work on its files.

    With `lock` (the holder's own), only checks that it still holds the folder. Without it,
    locks the folder for the block, or, when a run of the current thread holds it, works under
    that run's lock.

    Raises:
        BackupInUseError: Another process or thread holds the folder, or `lock` lost it.
        ValueError: The lock file is a symbolic link or not a regular file.
    """
    if lock is not None:
        lock.check_held()
        yield
        return
    directory = os.fspath(directory)
    fd, holder = _lock_or_holder(directory)
    if fd is None:
        ours = _own_duplicate(directory, holder)
        if ours is None:
            raise _in_use(directory, holder)
        os.close(ours)
        if holder.thread_ident != threading.get_ident():
            raise BackupInUseError(
                f"The backup folder {directory!r} is in use by a training run in another thread "
                f"({holder.thread_name}) of this process."
            )
        yield
        return
    _write_record(fd)
    try:
        yield
    finally:
        _release(fd)


class _Holder:
    """The holder a lock file names (its record); empty fields when it names none."""

    def __init__(self, text: str):
        fields = text.split(maxsplit=3)
        valid = len(fields) == 4 and all(f.isdigit() for f in fields[:3])
        self.pid = int(fields[0]) if valid else None
        self.fd = int(fields[1]) if valid else None
        self.thread_ident = int(fields[2]) if valid else None
        self.thread_name = fields[3].strip() if valid else None
        self.shown = fields[0] if fields else "unknown"

    @classmethod
    def read(cls, fd):
        return cls(os.pread(fd, 4096, 0).decode(errors="replace"))

    def names(self, fd) -> bool:
        """Whether the record names descriptor `fd` of this process."""
        return self.pid == os.getpid() and self.fd == fd

    @property
    def alive(self) -> bool:
        """Whether the thread it names is a live thread of this process."""
        return any(
            t.ident == self.thread_ident and t.name == self.thread_name
            for t in threading.enumerate()
        )


def _open_lock_file(directory):
    """A read-write descriptor of the folder's lock file (created); refuses a non-regular one."""
    path = os.path.join(directory, LOCK_FILE)
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO) and not os.path.islink(path):
            raise
        fd = None
    if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    if fd is not None:
        os.close(fd)
    what = "a symbolic link" if os.path.islink(path) else "not a regular file"
    raise ValueError(
        f"backup_dir: the lock file {path!r} is {what}; it is left as it is and the folder is "
        "not used. Remove it (a new one is created) or give this run another folder."
    )


def _lock_or_holder(directory):
    """`(descriptor, None)` holding the folder's lock, or `(None, holder)` when it is held."""
    path = os.path.join(directory, LOCK_FILE)
    for _ in range(3):
        fd = _open_lock_file(directory)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _Holder.read(fd)
                    os.close(fd)
                    return None, holder
            if _key_of_path(path) == _key_of(os.fstat(fd)):
                return fd, None
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        os.close(fd)  # the lock file was removed or replaced meanwhile: lock the one there now
    raise BackupInUseError(f"The lock file {path!r} keeps being replaced by another process.")


def _own_duplicate(directory, holder):
    """A duplicate of the holder's descriptor if it is this process's lock on the folder."""
    if holder.pid != os.getpid() or fcntl is None:
        return None
    try:
        duplicate = os.dup(holder.fd)
    except OSError:
        return None
    try:
        same_file = _key_of(os.fstat(duplicate)) == _key_of_path(os.path.join(directory, LOCK_FILE))
        if same_file:
            # Succeeds only on the description that holds the lock: the proof it is ours.
            fcntl.flock(duplicate, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return duplicate
    except OSError:
        pass
    os.close(duplicate)
    return None


def _in_use(directory, holder):
    return BackupInUseError(
        f"The backup folder {directory!r} is in use by another training run (process "
        f"{holder.shown}): two runs on one folder would overwrite each other's backups. Wait for "
        "it to end, or give this run its own folder."
    )


def _write_record(fd) -> None:
    """Names this process, `fd` and the current thread in the lock file."""
    thread = threading.current_thread()
    record = f"{os.getpid()} {fd} {thread.ident} {thread.name}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)


def _release(fd):
    """Unlocks if the record still names `fd` (no later run took over); closes `fd`.

    The record stays: a stale one is harmless, since only the OS's answer proves a lock ours.
    """
    try:
        if fcntl is not None and _Holder.read(fd).names(fd):
            # Unlocks the description, which a run that took over would share.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _key_of(status):
    return (status.st_dev, status.st_ino)


def _key_of_path(path):
    try:
        return _key_of(os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return None
