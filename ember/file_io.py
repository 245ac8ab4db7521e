"""A sandbox's files (sb.open, sb.ls, sb.mkdir, sb.rm, sb.watch; Modal's FileIO, FileWatchEvent
and their errors).

Each operation is an exec in the sandbox of a small POSIX shell script (argv carries the path,
never the script's text): it runs inside the sandbox's namespaces and root as any command there
does, so a path (or a symlink in it) reaches nothing outside the sandbox, and a file streams
through the exec's stdout or stdin in chunks, however large. The script says what went wrong by
its exit code (below), which becomes the SandboxFilesystem*Error Modal raises. A watch is an
exec of a small Python program (the sandbox's python3: Ember's runtime needs one in every image)
that reads inotify through ctypes and prints each event as it comes.
"""

from __future__ import annotations

import codecs
import dataclasses
import enum
import typing

from . import exception
from ._client.bridge import twin
from ._client.client import Client

if typing.TYPE_CHECKING:
    from .sandbox import ContainerProcess, Sandbox

NOT_FOUND, IS_DIR, NOT_DIR, NOT_EMPTY, EXISTS = 100, 101, 102, 103, 104
ERRORS = {NOT_FOUND: exception.SandboxFilesystemNotFoundError, IS_DIR: exception.SandboxFilesystemIsADirectoryError,
          NOT_DIR: exception.SandboxFilesystemNotADirectoryError,
          NOT_EMPTY: exception.SandboxFilesystemDirectoryNotEmptyError,
          EXISTS: exception.SandboxFilesystemPathAlreadyExistsError}
WORDS = {NOT_FOUND: "no such file or directory", IS_DIR: "is a directory", NOT_DIR: "is not a directory",
         NOT_EMPTY: "the directory is not empty (pass recursive=True)", EXISTS: "exists already"}
# Scripts print R once their checks pass and the file is open: open() waits for it, or their exit.
READ = 'p=$1; [ -e "$p" ] || exit 100; [ -d "$p" ] && exit 101; exec 3<"$p" || exit 1; printf R; exec cat <&3'
WRITE = ('p=$1; [ -d "$p" ] && exit 101; d=$(dirname -- "$p"); [ -e "$d" ] || exit 100; [ -d "$d" ] || exit 102; '
         'if [ "$2" = a ]; then exec 3>>"$p" || exit 1; else exec 3>"$p" || exit 1; fi; printf R; exec cat >&3')
LS = ('p=$1; [ -e "$p" ] || exit 100; [ -d "$p" ] || exit 102; cd -- "$p" || exit 1; '
      'for f in * .[!.]* ..?*; do if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\\0" "$f"; fi; done')
MKDIR = ('p=$1; if [ "$2" = 1 ]; then [ -e "$p" ] && [ ! -d "$p" ] && exit 104; exec mkdir -p -- "$p"; fi; '
         '[ -e "$p" ] && exit 104; d=$(dirname -- "$p"); [ -e "$d" ] || exit 100; [ -d "$d" ] || exit 102; '
         'exec mkdir -- "$p"')
RM = ('p=$1; [ -e "$p" ] || [ -L "$p" ] || exit 100; if [ -d "$p" ] && [ ! -L "$p" ]; then '
      'if [ "$2" = 1 ]; then exec rm -rf -- "$p"; fi; [ -z "$(ls -A -- "$p")" ] || exit 103; exec rmdir -- "$p"; '
      'fi; exec rm -f -- "$p"')
# argv: path, recursive (1/0), timeout (seconds, 0: none). Prints R once watching, then each event
# as TYPE, a tab, its path and a NUL; exits 100 if the path does not exist.
WATCH = r"""
import ctypes, os, select, struct, sys, time
root, recursive, timeout = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
if not os.path.exists(root):
    sys.exit(100)
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_CLOEXEC)
if fd < 0:
    sys.exit("inotify: " + os.strerror(ctypes.get_errno()))
ACCESS, MODIFY, ATTRIB, MOVED_FROM, MOVED_TO, CREATE, DELETE = 0x1, 0x2, 0x4, 0x40, 0x80, 0x100, 0x200
DELETE_SELF, MOVE_SELF, IGNORED, ISDIR = 0x400, 0x800, 0x8000, 0x40000000
MASK = ACCESS | MODIFY | ATTRIB | MOVED_FROM | MOVED_TO | CREATE | DELETE | DELETE_SELF | MOVE_SELF
watched = {}
def watch(path):
    wd = libc.inotify_add_watch(fd, os.fsencode(path), MASK)
    if wd >= 0:
        watched[wd] = path
    if recursive and os.path.isdir(path) and not os.path.islink(path):
        for d, subdirs, _ in os.walk(path):
            for s in subdirs:
                sub = os.path.join(d, s)
                wd = libc.inotify_add_watch(fd, os.fsencode(sub), MASK)
                if wd >= 0:
                    watched[wd] = sub
watch(root)
out = sys.stdout.buffer
out.write(b"R")
out.flush()
deadline = time.monotonic() + timeout if timeout else None
while watched:
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        break
    if not select.select([fd], [], [], left)[0]:
        continue
    data, i = os.read(fd, 1 << 16), 0
    while i < len(data):
        wd, mask, _cookie, n = struct.unpack_from("iIII", data, i)
        name = data[i + 16:i + 16 + n].rstrip(b"\0")
        i += 16 + n
        base = watched.get(wd)
        if base is None:
            continue
        if mask & IGNORED:
            del watched[wd]
            continue
        path = os.path.join(base, os.fsdecode(name)) if name else base
        if mask & (CREATE | MOVED_TO):
            kind = "Create"
            if recursive and mask & ISDIR:
                watch(path)
        elif mask & (DELETE | MOVED_FROM | DELETE_SELF | MOVE_SELF):
            kind = "Remove"
        elif mask & (MODIFY | ATTRIB):
            kind = "Modify"
        elif mask & ACCESS:
            kind = "Access"
        else:
            kind = "Unknown"
        out.write(kind.encode() + b"\t" + os.fsencode(path) + b"\0")
    out.flush()
"""
MODES = {"r": ("r", True), "rb": ("r", False), "w": ("w", True), "wb": ("w", False), "a": ("a", True),
         "ab": ("a", False)}


def check_path(path, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise exception.InvalidError(f"{what}: {path!r}: pass an absolute path in the sandbox, e.g. \"/tmp/a.txt\"")
    return path


class FileWatchEventType(enum.Enum):
    Unknown = "Unknown"
    Access = "Access"
    Create = "Create"
    Modify = "Modify"
    Remove = "Remove"


@dataclasses.dataclass
class FileWatchEvent:
    paths: list[str]
    type: FileWatchEventType


async def watch(sb: Sandbox, path: str, filter, recursive: bool, timeout) -> typing.AsyncIterator[FileWatchEvent]:
    """Events of a path of the sandbox (with recursive, of everything under it too) as they come,
    until `timeout` seconds passed (None: until the caller stops iterating, or the sandbox ends)."""
    what = sb._what("watch()")
    check_path(path, what)
    kinds = None
    if filter is not None:
        if not isinstance(filter, (list, tuple, set)) or not all(isinstance(k, FileWatchEventType) for k in filter):
            raise exception.InvalidError(f"{what}: filter={filter!r}: pass a list of ember.FileWatchEventType, "
                                         "e.g. [FileWatchEventType.Modify]")
        kinds = set(filter)
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0):
        raise exception.InvalidError(f"{what}: timeout={timeout!r}: pass seconds, more than 0 (or None)")
    p = await sb.exec.aio("python3", "-c", WATCH, path, "1" if recursive else "0", str(timeout or 0), text=False)
    pipe, seen, rest, watching = p._pipes[1], 0, b"", False
    try:
        while True:
            changed = pipe.changed
            if seen < len(pipe.chunks):
                rest += b"".join(pipe.chunks[seen:])
                seen = len(pipe.chunks)
                if not watching and rest[:1] == b"R":  # set up: what follows are events
                    rest, watching = rest[1:], True
                *events, rest = rest.split(b"\0")
                for event in events:
                    kind, _, name = event.partition(b"\t")
                    e = FileWatchEvent([name.decode(errors="surrogateescape")], FileWatchEventType(kind.decode()))
                    if kinds is None or e.type in kinds:
                        yield e
                continue
            if pipe.eof:
                break
            await changed.wait()
        code = await p.wait.aio()
        if code:  # it ends by itself only at its timeout
            raise await _error(p, code, path)
    finally:
        if p.returncode is None:  # the caller stopped iterating: the watch ends
            p._exec.write_eof()
            p._task.cancel()


async def run_script(sb: Sandbox, script: str, path: str, *args: str) -> bytes:
    """Run a script to its end: its stdout, or the error its exit code names."""
    p = await sb.exec.aio("sh", "-c", script, "sh", path, *args, text=False)
    out = await p.stdout.read.aio()
    code = await p.wait.aio()
    if code:
        raise await _error(p, code, path)
    return out


async def _error(p: ContainerProcess, code: int, path: str) -> exception.Error:
    if code in ERRORS:
        return ERRORS[code](f"{path}: {WORDS[code]}")
    why = (await p.stderr.read.aio()).decode(errors="replace").strip()
    if "ermission denied" in why:
        return exception.SandboxFilesystemPermissionError(f"{path}: permission denied ({why})")
    return exception.SandboxFilesystemError(f"{path}: {why or f'failed (exit code {code})'}")


class FileIO:
    """A file of a sandbox, open for reading ("r", "rb") or writing ("w", "wb", "a", "ab"):
    read(n), readline(), readlines(), write(), flush(), close(); a context manager. Text modes
    read and write UTF-8."""

    def __init__(self, sb: Sandbox, path: str, mode: str):
        self._sb = sb
        self._path = path
        self._kind, self._text = MODES[mode]
        self._mode = mode
        self._proc: ContainerProcess | None = None
        self._buffer = b""
        self._read_chunks = 0
        self._eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.closed = False

    def __repr__(self):
        return f"<ember FileIO {self._path!r} mode {self._mode!r} of {self._sb.object_id}>"

    def _loop(self):
        return Client.from_env().bridge

    async def _open(self):
        script = READ if self._kind == "r" else WRITE
        self._proc = await self._sb.exec.aio("sh", "-c", script, "sh", self._path, self._kind, text=False)
        await self._fill(1)
        if not self._buffer[:1] == b"R":
            raise await _error(self._proc, await self._proc.wait.aio() or 1, self._path)
        self._buffer = self._buffer[1:]

    async def _fill(self, n: int | None):
        """Read from the command's stdout until the buffer has n bytes (None: all)."""
        pipe = self._proc._pipes[1]
        while n is None or len(self._buffer) < n:
            changed = pipe.changed
            if self._read_chunks < len(pipe.chunks):
                self._buffer += b"".join(pipe.chunks[self._read_chunks:])
                self._read_chunks = len(pipe.chunks)
                continue
            if pipe.eof:
                self._eof = True
                return
            await changed.wait()

    def _check(self, kind: str, op: str):
        if self.closed:
            raise exception.InvalidError(f"{self!r}: {op} on a closed file")
        if self._kind != kind and not (kind == "w" and self._kind == "a"):
            raise exception.InvalidError(f"{self!r}: {op} needs the file open for "
                                         f"{'reading' if kind == 'r' else 'writing'}")

    def _out(self, data: bytes, final: bool = False):
        return self._decoder.decode(data, final) if self._text else data

    @twin
    async def read(self, n: int | None = None):
        """n bytes (text: about n bytes' characters), or all that is left."""
        self._check("r", "read()")
        await self._fill(n)
        take = len(self._buffer) if n is None else min(n, len(self._buffer))
        data, self._buffer = self._buffer[:take], self._buffer[take:]
        if self._eof and not self._buffer:
            await self._ended()
        return self._out(data, final=self._eof and not self._buffer)

    @twin
    async def readline(self):
        self._check("r", "readline()")
        pipe = self._proc._pipes[1]
        while b"\n" not in self._buffer and not self._eof:
            await self._fill(len(self._buffer) + 1)
            if pipe.eof and self._read_chunks == len(pipe.chunks):
                self._eof = True
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return self._out(line, final=self._eof and not self._buffer)

    @twin
    async def readlines(self) -> list:
        text = await self.read.aio()
        return text.splitlines(keepends=True)

    async def _ended(self):
        code = await self._proc.wait.aio()
        if code:
            raise await _error(self._proc, code, self._path)

    @twin
    async def write(self, data) -> None:
        self._check("w", "write()")
        if self._text:
            if not isinstance(data, str):
                raise TypeError(f"write() of a file open in text mode ({self._mode!r}) takes str, not "
                                f"{type(data).__name__}")
            data = data.encode()
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() of a file open in binary mode ({self._mode!r}) takes bytes, not "
                            f"{type(data).__name__}")
        self._proc.stdin.write(bytes(data))
        await self._proc.stdin.drain.aio()

    @twin
    async def flush(self) -> None:
        self._check("w", "flush()")
        await self._proc.stdin.drain.aio()

    @twin
    async def close(self) -> None:
        """For writing: once the file is written whole (or the error that stopped it)."""
        if self.closed:
            return
        self.closed = True
        if self._kind == "r":
            if self._proc.returncode is None:
                self._proc._exec.write_eof()
                self._proc._task.cancel()  # what is not read is not wanted: the command is ended
            return
        self._proc.stdin.write_eof()
        await self._proc.stdin.drain.aio()
        await self._ended()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close.aio()
