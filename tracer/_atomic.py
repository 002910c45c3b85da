"""Files that appear whole or not at all, and output directories whose files appear together.

Why: a reader (the Perfetto UI, ``spectrace report``, CI collecting artifacts) must never see
half a file, and a run that failed or was interrupted must not leave a trace without its
``ttft.json`` or an empty ``--out`` directory that looks like a result (STYLE.md rule 12).

* :func:`atomic_output` writes to a temporary name in the destination's own folder (so the
  rename never crosses file systems) and ``os.replace``\\ s it into place only if the block
  succeeds; on any failure, Ctrl-C included, the temporary file is removed. An ``OSError``
  names the destination, not the hidden temporary name (a full disk says which file).
* :class:`OutputDir` is a command's output directory: checked before the work starts, created
  when the first file is written, and rolled back (this run's files removed, directories it
  created removed) if the command fails before it finishes.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import shutil
from pathlib import Path

from .errors import UserError, interrupts_deferred

__all__ = ["OutputDir", "atomic_output", "write_bytes", "write_text"]


@contextlib.contextmanager
def atomic_output(path):
    """Open ``path`` for binary writing; it appears (by rename) only if the block succeeds."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        # Created like open(path, "w") would (0o666 less the umask), not mkstemp's 0o600: the
        # rename makes this file the output. O_EXCL: a name clash fails instead of clobbering.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(e, path) from e
        raise


def _naming(e: OSError, path: str) -> OSError:
    """The same error (same errno, so the same subclass) naming the destination ``path``."""
    if e.filename == path:
        return e
    return OSError(e.errno, e.strerror or str(e), path) if e.errno else OSError(f"{path}: {e}")


def write_bytes(path, data: bytes) -> None:
    with atomic_output(path) as f:
        f.write(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def make_dirs(path) -> list[Path]:
    """``mkdir -p path``; returns the directories it created, outermost first (for rollback)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
            continue
        created.append(d)
    return created


def remove_dirs(created) -> None:
    """Remove directories :func:`make_dirs` created, innermost first, if they are empty."""
    for d in reversed(list(created)):
        with contextlib.suppress(OSError):
            d.rmdir()


def _identity(p: Path):
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class OutputDir:
    """A command's ``--out`` directory: checked now, created late, rolled back on failure.

    ``names`` are the files the command will write there: each must be writable as a file (a
    directory of that name is refused before any work). With ``path`` None the directory is
    ``default_root/<YYYYmmdd-HHMMSS>`` of the start time, with ``-2``, ``-3``... appended when a
    run started in the same second already took that name (claimed by ``mkdir``, so two
    concurrent runs never share one). Use as a context manager: leaving the block by an
    exception removes the files of :meth:`file` and the directories this object created.
    """

    def __init__(self, path, *, names=(), option: str = "--out", default_root=None, prog: str = "spectrace"):
        self.option, self.prog, self.names = option, prog, tuple(names)
        self._given = None if path is None else Path(path)
        self._root = Path(default_root or "spectrace-out")
        self._stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self._path: Path | None = None
        self._created: list[Path] = []
        self._files: list[tuple] = []
        self._subdirs: list[Path] = []
        self.check()

    @property
    def path(self) -> Path:
        """The directory (created on first use)."""
        return self.create()

    def check(self) -> None:
        """Refuse, naming the option and path, what cannot become this directory and its files."""
        target = self._given if self._given is not None else self._root
        what = f"{self.option} {str(target)!r}" if self._given is not None else f"the default output directory {str(target)!r}"
        if target.exists() and not target.is_dir():
            raise UserError(f"{self.prog}: {what} is an existing file, not a directory; "
                            f"give a new or existing directory")
        if target.is_dir():
            for name in self.names if self._given is not None else ():
                p = target / name
                if p.is_dir():
                    raise UserError(f"{self.prog}: {str(p)!r} is a directory, but {self.prog} writes the file "
                                    f"{name} there; remove it or give another {self.option}")
            self._probe(target, what)
            return
        ancestor = target.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UserError(f"{self.prog}: cannot create {what}: {str(ancestor)!r} is a file, not a directory")
        self._probe(ancestor, what)

    def _probe(self, folder: Path, what: str) -> None:
        """Create and remove a temporary file: the only test of writability that holds for root too."""
        probe = folder / f".spectrace-probe-{secrets.token_hex(6)}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError as e:
            raise UserError(f"{self.prog}: cannot write {what} (in {str(folder)!r}: {e.strerror or e})") from None

    def create(self) -> Path:
        if self._path is not None:
            return self._path
        try:
            if self._given is not None:
                self._created += make_dirs(self._given)
                self._path = self._given
            else:
                self._created += make_dirs(self._root)
                for n in range(1, 1000):
                    p = self._root / (self._stamp if n == 1 else f"{self._stamp}-{n}")
                    try:
                        p.mkdir()
                    except FileExistsError:
                        continue
                    self._created.append(p)
                    self._path = p
                    break
                else:  # pragma: no cover - a thousand runs in one second
                    raise FileExistsError(f"{self._root}/{self._stamp}-* are all taken")
        except OSError as e:
            raise UserError(f"{self.prog}: cannot create {self.option} {str(e.filename or self._given)!r}: "
                            f"{e.strerror or e}") from None
        return self._path

    def file(self, name: str) -> Path:
        """The path of output file ``name``, removed again if the command fails."""
        p = self.create() / name
        self._files.append((p, _identity(p)))
        return p

    def subdir(self, name: str) -> Path:
        """A directory for a tool that writes files itself (the XPlane profile)."""
        p = self.create() / name
        if not p.exists():
            self._subdirs.append(p)
        return p

    def rollback(self) -> None:
        with interrupts_deferred():  # a second Ctrl-C must not stop the cleanup half-way
            self._remove()

    def _remove(self) -> None:
        for p, before in self._files:
            if _identity(p) != before:  # this run wrote it (a file it never replaced stays)
                with contextlib.suppress(OSError):
                    p.unlink()
        for d in self._subdirs:
            shutil.rmtree(d, ignore_errors=True)
        remove_dirs(self._created)
        self._files, self._subdirs, self._created = [], [], []

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.rollback()
        return False
