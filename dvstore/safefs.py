"""Safe file-system access under a directory fd: nothing is ever opened, written or walked
through a symbolic link (RELIABILITY §3.1).

Directories are opened with ``O_DIRECTORY|O_NOFOLLOW`` under their parent's fd; files are
created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (in place, or under a temp name renamed within the
directory fd) and read with ``O_NOFOLLOW``. The working-folder code (``dvstore.workdir``) is
the user; this module knows nothing about items, versions or the store.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dvstore.errors import StorageError, UsageError
from dvstore.hashing import CHUNK, Digest, new_hasher
from dvstore.io import imageinfo
from dvstore.storage.blobs import storage_error

FILE_MODE = 0o644
DIR_MODE = 0o755
TMP_PREFIX = ".dvs-tmp-"
_TMP_LEN = len(TMP_PREFIX) + 16
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
LINK_ERRNOS = (errno.ENOTDIR, errno.ELOOP)


def display_path(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def is_tmp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and len(name) == _TMP_LEN


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def unlink_quiet(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


# -- safe directory access -----------------------------------------------------------------


def open_dir(parent_fd: int, name: str, display: str, *, create: bool, replace_links: bool) -> int:
    """Open (or create) the directory ``name`` under ``parent_fd`` without following a link.

    With ``replace_links`` a symlink in the way is removed (the link itself, never its
    target) and a real directory made in its place; otherwise it is an error.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as e:
        if e.errno not in LINK_ERRNOS:
            raise storage_error(e, f"cannot open {display}") from None
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not statmod.S_ISLNK(st.st_mode):
            raise UsageError(f"{display} is in the way: it is a file, not a folder",
                             hint="move it away and run the command again") from None
        if not replace_links:
            raise UsageError(f"{display} is a symbolic link; dvs never follows links in a working folder",
                             hint="remove the link and run the command again") from None
        os.unlink(name, dir_fd=parent_fd)
    try:
        os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as e:
        raise storage_error(e, f"cannot create {display}") from None
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        raise UsageError(f"cannot open {display}: {e.strerror}") from None


def remove_tree(parent_fd: int, name: str, display: str) -> None:
    """Delete ``name`` under ``parent_fd``: a file or a symlink (the link itself, never what
    it points at), or a folder with everything below it. Nothing is followed, and nothing on
    another file system (a mount point below) is deleted: that is an error."""
    st = _lstat_at(parent_fd, name, display)
    if st is None:
        return
    if not statmod.S_ISDIR(st.st_mode):
        _unlink(parent_fd, name, display)
        return
    dev = os.fstat(parent_fd).st_dev
    # Depth first without recursion (item names may nest thousands of folders deep); a
    # frame is (folder fd, names left in it, the fd it sits in, its name, its display).
    frames = [_open_to_empty(parent_fd, name, display, dev)]
    try:
        while frames:
            fd, left, up, dname, where = frames[-1]
            if not left:
                frames.pop()
                os.close(fd)
                try:
                    os.rmdir(dname, dir_fd=up)
                except OSError as e:
                    raise _remove_error(e, where) from None
                continue
            entry = left.pop()
            here = f"{where}/{entry}"
            est = _lstat_at(fd, entry, here)
            if est is None:
                continue
            if statmod.S_ISDIR(est.st_mode):
                frames.append(_open_to_empty(fd, entry, here, dev))
            else:
                _unlink(fd, entry, here)
    finally:
        for frame in frames:
            os.close(frame[0])


def prune(top_fd: int, display: str, keep_files: set[str], keep_dirs: set[str]) -> int:
    """Delete everything below the folder ``top_fd`` but the regular files ``keep_files``
    and the folders ``keep_dirs`` (paths relative to it, ``/``-separated; a kept file's
    folders must be kept too), as ``remove_tree`` deletes. Returns how many entries went."""
    removed = 0
    stack: list[tuple[str, int]] = [("", os.dup(top_fd))]
    try:
        while stack:
            rel, fd = stack.pop()
            try:
                try:
                    names = sorted(os.listdir(fd))
                except OSError as e:
                    raise _remove_error(e, display_path(display, rel)) from None
                for name in names:
                    r = f"{rel}/{name}" if rel else name
                    st = _lstat_at(fd, name, display_path(display, r))
                    if st is None:
                        continue
                    if statmod.S_ISDIR(st.st_mode) and r in keep_dirs:
                        try:
                            stack.append((r, os.open(name, DIR_FLAGS, dir_fd=fd)))
                        except OSError as e:
                            raise _remove_error(e, display_path(display, r)) from None
                    elif not (statmod.S_ISREG(st.st_mode) and r in keep_files):
                        remove_tree(fd, name, display_path(display, r))
                        removed += 1
            finally:
                os.close(fd)
    finally:
        for _, fd in stack:
            os.close(fd)
    return removed


def _open_to_empty(parent_fd: int, name: str, display: str, dev: int) -> tuple[int, list[str], int, str, str]:
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        raise _remove_error(e, display) from None
    try:
        if os.fstat(fd).st_dev != dev:
            raise UsageError(f"{display} is another file system (a mount point); dvs deletes nothing there",
                             hint="unmount it or move it away, then run the command again")
        names = os.listdir(fd)
    except OSError as e:
        os.close(fd)
        raise _remove_error(e, display) from None
    except BaseException:
        os.close(fd)
        raise
    return fd, names, parent_fd, name, display


def _lstat_at(dir_fd: int, name: str, display: str) -> os.stat_result | None:
    """``name``'s own stat (a link's, not its target's); None if it is gone."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _remove_error(e, display) from None


def _unlink(dir_fd: int, name: str, display: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _remove_error(e, display) from None


def _remove_error(e: OSError, display: str) -> UsageError | StorageError:
    if e.errno == errno.EIO:
        return storage_error(e, f"cannot remove {display}")
    if e.errno in LINK_ERRNOS:
        return UsageError(f"{display} changed while it was being removed", hint="run the command again")
    return UsageError(f"cannot remove {display}: {e.strerror or e}",
                      hint="fix its permissions or remove it yourself, then run the command again")


class DirChain:
    """Directory fds along one path below a root fd, reused across sorted accesses.

    Sorted filenames put a folder's entries next to each other, so keeping the chain of
    the last path open costs one ``open`` per new directory and at most depth fds.
    """

    def __init__(self, root_fd: int, base: str, *, create: bool, replace_links: bool) -> None:
        self.root_fd = root_fd
        self.base = base
        self.create = create
        self.replace_links = replace_links
        self.names: list[str] = []
        self.fds: list[int] = []

    def fd(self, parts: list[str]) -> int:
        keep = 0
        while keep < len(self.names) and keep < len(parts) and self.names[keep] == parts[keep]:
            keep += 1
        self._pop_to(keep)
        for name in parts[keep:]:
            parent = self.fds[-1] if self.fds else self.root_fd
            display = display_path(self.base, *self.names, name)
            fd = open_dir(parent, name, display, create=self.create, replace_links=self.replace_links)
            self.names.append(name)
            self.fds.append(fd)
        return self.fds[-1] if self.fds else self.root_fd

    def _pop_to(self, n: int) -> None:
        while len(self.fds) > n:
            os.close(self.fds.pop())
            self.names.pop()

    def close(self) -> None:
        self._pop_to(0)


def write_file(dir_fd: int, name: str, chunks: Iterable[bytes], display: str, *,
                exclusive: bool = False) -> os.stat_result:
    """Write ``name`` under ``dir_fd`` with mode 0644, never through a symlink.

    With ``exclusive`` (a checkout into an empty folder) the file is created in place with
    ``O_CREAT|O_EXCL|O_NOFOLLOW``: anything already there is an error. Otherwise a temp file
    is created that way and renamed over ``name`` within the directory fd; the rename
    replaces a symlink in the way, never what it points at. Either way, if ``chunks``
    raises (a corrupt blob) what was written is removed and the error propagates.
    """
    target = name if exclusive else TMP_PREFIX + os.urandom(8).hex()
    try:
        fd = os.open(target, _CREATE_FLAGS, FILE_MODE, dir_fd=dir_fd)
    except FileExistsError:
        raise UsageError(f"{display} appeared while checking out", hint="check out into an empty folder") from None
    except OSError as e:
        raise storage_error(e, f"cannot write {display}") from None
    done = False
    try:
        try:
            for chunk in chunks:
                write_all(fd, chunk)
            os.fchmod(fd, FILE_MODE)  # whatever the umask
        finally:
            os.close(fd)
        if not exclusive:
            try:
                os.replace(target, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as e:
                if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise UsageError(f"{display} is in the way: it is a folder, not a file",
                                     hint="move it away and run the command again") from None
                raise
        done = True
    except OSError as e:
        raise storage_error(e, f"cannot write {display}") from None
    finally:
        if not done:
            unlink_quiet(target, dir_fd)
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)


def open_in(root_fd: int, parts: list[str], display: str) -> int:
    """Open a regular file ``root/parts...`` for reading, following no link on the way."""
    fds: list[int] = []
    try:
        parent = root_fd
        for name in parts[:-1]:
            try:
                parent = os.open(name, DIR_FLAGS, dir_fd=parent)
            except OSError as e:
                raise UsageError(f"cannot read {display}: {e.strerror}") from None
            fds.append(parent)
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in LINK_ERRNOS:
                raise UsageError(f"{display} is a symbolic link; dvs never follows links in a working folder",
                                 hint="replace it with a regular file") from None
            raise UsageError(f"cannot read {display}: {e.strerror}") from None
    finally:
        for f in fds:
            os.close(f)
    if not statmod.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{display} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_chunks(fd: int) -> Iterator[bytes]:
    """Every read of a working-folder file's contents goes through here (tests count calls)."""
    while True:
        chunk = os.read(fd, CHUNK * 4)
        if not chunk:
            return
        yield chunk


def read_all(root_fd: int, parts: list[str], display: str) -> tuple[bytes, os.stat_result]:
    fd = open_in(root_fd, parts, display)
    try:
        st = os.fstat(fd)
        return b"".join(read_chunks(fd)), st
    finally:
        os.close(fd)


def hash_in(root_fd: int, parts: list[str], display: str) -> tuple[Digest, bytes, os.stat_result]:
    """(blake3, first bytes for sniffing, stat taken before reading) of a folder file."""
    fd = open_in(root_fd, parts, display)
    try:
        st = os.fstat(fd)
        h = new_hasher(st.st_size)
        head = b""
        for chunk in read_chunks(fd):
            if not head:
                head = chunk[: imageinfo.HEAD_BYTES]
            h.update(chunk)
        return h.digest(), head, st
    finally:
        os.close(fd)


@dataclass
class DiskFile:
    rel: str  # path below items/ or json/, as on disk
    st: os.stat_result


def walk_files(root_fd: int, top: str) -> list[DiskFile]:
    """Regular files below ``root/top`` (missing ``top`` = none); a symlink or special file is an error."""
    try:
        top_fd = os.open(top, DIR_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        return []
    except OSError as e:
        if e.errno in LINK_ERRNOS:
            raise UsageError(f"{top} is not a folder (symbolic links are never followed)",
                             hint=f"replace {top} with a real folder") from None
        raise UsageError(f"cannot read {top}: {e.strerror}") from None
    out: list[DiskFile] = []
    stack: list[tuple[str, int]] = [("", top_fd)]
    try:
        while stack:
            rel, fd = stack.pop()
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
                for ent in entries:
                    r = f"{rel}/{ent.name}" if rel else ent.name
                    st = ent.stat(follow_symlinks=False)
                    if statmod.S_ISDIR(st.st_mode):
                        try:
                            sub = os.open(ent.name, DIR_FLAGS, dir_fd=fd)
                        except OSError as err:
                            raise UsageError(f"cannot read {top}/{r}: {err.strerror}") from None
                        stack.append((r, sub))
                    elif statmod.S_ISREG(st.st_mode):
                        if not is_tmp_name(ent.name):
                            out.append(DiskFile(r, st))
                    elif statmod.S_ISLNK(st.st_mode):
                        raise UsageError(f"{top}/{r} is a symbolic link; dvs never follows links in a working folder",
                                         hint="replace it with a regular file or remove it")
                    else:
                        raise UsageError(f"{top}/{r} is not a regular file", hint="remove it")
            finally:
                os.close(fd)
    finally:
        for _, fd in stack:
            os.close(fd)
    return out
