"""The files of a night, one at a time: which names of a run folder are products, where a copy
may go, and the streaming copy itself.

* :func:`classify_names`: products, expected non-products (``NOT_PRODUCTS``, folders) and
  unmatched names of a run folder; hostile names refused;
* :func:`inside`: an archive path strictly inside the archive root, or a refusal;
* :func:`copy_file`: cluster → archive ``.part`` in chunks of ``CHUNK``, reads ahead of the
  writes, a large left-over ``.part`` resumed (``RESUME_MIN``), the source's sha256 computed on
  the way; :func:`hash_source`: the sha256 of a remote file read over SFTP (asyncssh);
* :func:`sha256_of`: the same over a paramiko ``SFTPClient`` (the CLI's);
* the night's small files as one stream (issue 15): :func:`stream_command` (tar on the
  cluster, names on its stdin) and :func:`tar_members` (the members as they arrive), instead
  of an SFTP open/read/close per file.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import shlex
import stat

import asyncssh

from hfc_tasks.archive.errors import TransferError
from hfc_tasks.products import ProductNameError, parse_product_name

CHUNK = 1024 * 1024  # streaming unit: a file is never held in memory beyond a few chunks
PIPELINE_CHUNKS = 4  # chunks read ahead of the archive writes, and writes in flight, per large file
RESUME_MIN = 8 * CHUNK  # a left-over .part at least this big is resumed rather than rewritten
NOT_PRODUCTS = (".out", ".err", ".tmp", ".part")  # SLURM output, half-written files: stay on the cluster


def classify_names(
    entries: list[tuple[str, int, int]], run_dir: str, known=None
) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """(products with sizes, ignored names, unmatched names) from (name, st_mode, size) of a run folder.

    Ignored: what a run folder is expected to hold beside products (SLURM output and other
    ``NOT_PRODUCTS``, folders, symlinks). Unmatched: regular files whose name is no product name
    (``_feats.csv``, ``.csv.gz``, ``a b.csv``...): the FRC wrote something the pipeline cannot
    file. Hostile names (path separators, ``..``, control characters) are refused: nothing is copied.
    ``known``: the formats whose file kinds name products (the registry's; default the presets).
    """
    products, ignored, unmatched, refused = [], [], [], []
    for name, mode, size in sorted(entries):
        if name in (".", ".."):
            continue
        if any(c in name for c in "/\\") or ".." in name or not name.isprintable():
            refused.append(f"refused product name {name!r}: path separators, '..' or control characters")
            continue
        if not stat.S_ISREG(mode or 0):  # folders, symlinks: never followed
            ignored.append(name)
            continue
        if name.endswith(NOT_PRODUCTS):
            ignored.append(name)
            continue
        try:
            parse_product_name(name, known)
        except ProductNameError:
            unmatched.append(name)
            continue
        products.append((name, size or 0))
    if refused:
        raise TransferError(
            f"run folder {run_dir} holds files with names that are not allowed; nothing was copied:\n  "
            + "\n  ".join(refused)
        )
    return products, ignored, unmatched


def inside(root: str, path: str) -> str:
    """``path`` if it is strictly inside ``root`` (normalised), else refuse: defence in depth."""
    norm = posixpath.normpath(path)
    if norm != path or not norm.startswith(root.rstrip("/") + "/"):
        raise TransferError(f"refused archive path {path!r}: not a plain path inside {root}")
    return norm


async def stat_or_none(sftp, path: str):
    """The SFTP attributes of ``path``, or None when there is no such file."""
    try:
        return await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return None


async def _chunks(f, size: int = -1):
    """Yield a remote file's bytes in order, in chunks of at most CHUNK.

    With ``size`` (from the run folder's listing) exactly that many bytes are asked for: a
    small file costs one read request. A file that shrank ends early (the caller compares the
    count); one that grew is caught before deletion (its size is checked again). Without
    ``size``: up to the end of the file (asyncssh's ``read`` is short only there).
    """
    offset = 0
    while size < 0 or offset < size:
        want = CHUNK if size < 0 else min(CHUNK, size - offset)
        chunk = await f.read(want, offset)
        if chunk:
            yield chunk
        if len(chunk) < want:
            return
        offset += len(chunk)


async def hash_source(src, source: str, size_hint: int = -1) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    async with src.open(source, "rb") as f:
        async for chunk in _chunks(f, size_hint):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


async def copy_file(
    src, source: str, dst, part: str, size_hint: int = -1, *, may_resume: bool = True
) -> tuple[str, int]:
    """Stream ``source`` (cluster) → ``part`` (archive); return (sha256 of what was read, size).

    Reads run ahead of the writes by a bounded queue of chunks, so both connections stay busy
    and memory stays at a few chunks per file. A large ``.part`` left by an interrupted run is
    resumed: its bytes are kept, the source is still hashed from the start, and the archive-side
    verification of the whole file decides (a bad resumed copy is removed and rewritten).
    """
    h = hashlib.sha256()
    resume = 0  # bytes of an old .part kept
    if may_resume and size_hint >= RESUME_MIN:
        old = await stat_or_none(dst, part)
        if old is not None and old.size and 0 < old.size <= size_hint:
            resume = old.size - old.size % CHUNK  # whole chunks only
    queue: asyncio.Queue = asyncio.Queue(PIPELINE_CHUNKS)

    async def reader(fin) -> None:
        try:
            async for chunk in _chunks(fin, size_hint):
                await queue.put(chunk)
            await queue.put(b"")
        except Exception as exc:  # handed to the writer, which raises it
            await queue.put(exc)

    total = 0
    writes: set[asyncio.Future] = set()  # chunk writes in flight (distinct offsets: independent)
    async with src.open(source, "rb") as fin, dst.open(part, "r+b" if resume else "wb") as fout:
        task = asyncio.ensure_future(reader(fin))
        try:
            while True:
                chunk = await queue.get()
                if isinstance(chunk, Exception):
                    raise chunk
                if not chunk:
                    break
                h.update(chunk)
                end = total + len(chunk)
                if end > resume:
                    skip = max(resume - total, 0)
                    writes.add(asyncio.ensure_future(fout.write(chunk[skip:], total + skip)))
                    if len(writes) >= PIPELINE_CHUNKS:
                        done, writes = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                        for w in done:
                            w.result()
                total = end
            for w in writes:
                await w
        finally:
            for w in (task, *writes):
                w.cancel()
            await asyncio.gather(task, *writes, return_exceptions=True)
        if resume and total < resume:  # the source is shorter than the old .part: start again
            await fout.truncate(total)
    return h.hexdigest(), total


def sha256_of(sftp, path: str) -> str:
    """Read a remote file back (paramiko) and hash it."""
    h = hashlib.sha256()
    with sftp.open(path, "rb") as f:
        f.prefetch()
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- the night as one stream

STREAM_MAX = CHUNK  # files up to this size are read from the cluster in a tar stream (held in memory)
_BLOCK = 512


class StreamError(Exception):
    """The cluster's tar stream is not what was asked for (no tar, a refused command, garbage,
    a member not asked for): its files are read over SFTP instead."""


def stream_command(run_dir: str) -> str:
    """The cluster command that writes the files named on its stdin (NUL-separated, relative to
    ``run_dir``) as one tar stream on its stdout.

    The run folder is quoted with :func:`shlex.quote`; the names never touch the shell: tar reads
    them verbatim from stdin (``--null``: no option or quoting rules apply to them). No
    recursion: a name is one regular file (folders were left out by :func:`classify_names`)."""
    return f"exec tar -c -f - -b 1 --no-recursion --null -C {shlex.quote(run_dir)} -T -"


def _octal(field: bytes, where: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256 (sizes of 8 GiB and more)
        value = int.from_bytes(field[1:], "big")
        return value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise StreamError(f"tar stream: bad number {field!r} in the {where} field") from None


def _pax(data: bytes) -> dict[bytes, bytes]:
    """Records ``"<len> key=value\\n"`` of a pax extended header."""
    out, i = {}, 0
    while i < len(data):
        sp = data.find(b" ", i)
        if sp < 0:
            break
        try:
            n = int(data[i:sp])
        except ValueError:
            raise StreamError("tar stream: bad pax header") from None
        if n <= 0:
            break
        key, _, value = data[sp + 1:i + n - 1].partition(b"=")
        out[key] = value
        i += n
    return out


async def tar_members(reader):
    """Yield (name, bytes) of each regular file of a tar stream read from ``reader`` (an asyncssh
    stream in bytes), in stream order, until the end-of-archive block.

    Understands what GNU tar and bsdtar write for regular files: ustar/GNU headers, GNU long
    names (``L``) and pax headers (``x``: ``path``, ``size``; ``g`` ignored). Anything else
    (a link, a folder, a bad checksum, a cut stream) is a :class:`StreamError`."""
    long_name: bytes | None = None
    pax: dict[bytes, bytes] = {}
    while True:
        try:
            header = await reader.readexactly(_BLOCK)
        except asyncio.IncompleteReadError as exc:
            raise StreamError(f"tar stream ended early ({len(exc.partial)} bytes of a header)") from None
        if header == bytes(_BLOCK):
            return
        stored = _octal(header[148:156], "checksum")
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise StreamError("tar stream: header checksum mismatch (not a tar stream?)")
        size = _octal(header[124:136], "size")
        kind = header[156:157]
        name = header[:100].split(b"\0", 1)[0]
        if header[257:263] == b"ustar\0":  # POSIX ustar: a prefix field (GNU's "ustar  " has none)
            prefix = header[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        if kind in (b"x", b"g", b"L"):
            data = await _read_data(reader, size)
            if kind == b"L":
                long_name = data.split(b"\0", 1)[0]
            elif kind == b"x":
                pax = _pax(data)
            continue
        if b"path" in pax:
            name = pax[b"path"]
        elif long_name is not None:
            name = long_name
        if b"size" in pax:
            try:
                size = int(pax[b"size"])
            except ValueError:
                raise StreamError("tar stream: bad pax size") from None
        long_name, pax = None, {}
        if kind not in (b"0", b"\0"):
            raise StreamError(f"tar stream: {name!r} is not a regular file (type {kind!r})")
        try:
            text = name.decode()
        except UnicodeDecodeError:
            raise StreamError(f"tar stream: member name {name!r} is not UTF-8") from None
        yield text, await _read_data(reader, size)


async def _read_data(reader, size: int) -> bytes:
    padded = -(-size // _BLOCK) * _BLOCK
    try:
        data = await reader.readexactly(padded) if padded else b""
    except asyncio.IncompleteReadError as exc:
        raise StreamError(f"tar stream ended early ({len(exc.partial)} of {size} bytes of a file)") from None
    return data[:size] if padded != size else data
