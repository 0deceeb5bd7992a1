"""The file service's pure rules: object keys from request paths, byte ranges, errors.

An object key is a tuple of path components below the storage root. It is built only from
components that passed ``object_key``; nothing joins a raw request string onto a filesystem path.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGING_DIR = ".conveyor-staging"  # uploads in progress (same filesystem: rename is atomic)
MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux
MAX_KEY_BYTES = 4096  # PATH_MAX on Linux

ObjectKey = tuple[str, ...]


class FilesError(Exception):
    """A refused file request: ``status`` becomes the HTTP status, ``msg`` the body."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg


def refused(msg: str) -> FilesError:
    return FilesError(400, msg)


def not_found(msg: str) -> FilesError:
    return FilesError(404, msg)


def conflict(msg: str) -> FilesError:
    return FilesError(409, msg)


def too_large(msg: str) -> FilesError:
    return FilesError(413, msg)


def _components(text: str, what: str) -> list[str]:
    if "\x00" in text:
        raise refused(f"{what} contains a NUL byte")
    if "\\" in text:
        raise refused(f"{what} contains a backslash (use '/' between folders)")
    parts = text.split("/")
    for part in parts:
        if part == "":
            raise refused(f"{what} {text!r} has an empty component (absolute path or '//')")
        if part in (".", ".."):
            raise refused(f"{what} {text!r} has a {part!r} component")
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise refused(f"{what} has a component longer than {MAX_COMPONENT_BYTES} bytes")
    return parts


def object_key(folder: str, name: str = "") -> ObjectKey:
    """The key of the object at URL path ``folder`` (below the files prefix, percent-decoded) and
    multipart field ``name`` (relative to ``folder``).

    The SDK posts to the files host itself with names like ``/project/task.id/artifacts/a/a.json``:
    one leading ``/`` on the name and one trailing ``/`` on the folder are the forms clients use
    and mean "relative to here". Everything else that is not a plain name is refused: empty
    components (so absolute paths such as ``//etc/passwd``), ``.`` and ``..``, NUL bytes,
    backslashes, the staging folder, over-long names.
    """
    folder = folder.removesuffix("/")
    name = name.removeprefix("/")
    parts: list[str] = []
    if folder:
        parts += _components(folder, "path")
    if name:
        parts += _components(name, "field name")
    if not parts:
        raise refused("no object path: name the file (URL path or multipart field name)")
    if parts[0] == STAGING_DIR:
        raise refused(f"{STAGING_DIR!r} is reserved for uploads in progress")
    if len("/".join(parts).encode()) > MAX_KEY_BYTES:
        raise refused(f"object path longer than {MAX_KEY_BYTES} bytes")
    return tuple(parts)


def field_name(disposition: bytes) -> str:
    """The ``name`` parameter of a part's ``Content-Disposition: form-data; name="..."`` header.

    Clients send it as UTF-8 with ``"``, CR and LF percent-encoded (the WHATWG form urllib3 2
    and browsers use); RFC 2231 ``name*=`` is not allowed in form-data (RFC 7578).
    """
    try:
        text = disposition.decode()
    except UnicodeDecodeError as exc:
        raise refused("multipart field name is not UTF-8") from exc
    kind, _, params = text.partition(";")
    if kind.strip().lower() != "form-data":
        raise refused(f"multipart part is not form-data: {kind.strip()!r}")
    for param in _split_params(params):
        key, sep, value = param.partition("=")
        if sep and key.strip().lower() == "name":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            return value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
    raise refused("multipart part has no field name (Content-Disposition name=...)")


def _split_params(params: str) -> list[str]:
    """Split ``; a="x;y"; b=z`` on the semicolons outside quotes."""
    out: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in params:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            out.append("".join(current))
            current = []
            continue
        current.append(char)
    out.append("".join(current))
    return [p.strip() for p in out if p.strip()]


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


class RangeNotSatisfiable(FilesError):
    def __init__(self, size: int) -> None:
        super().__init__(416, f"requested range not satisfiable (size {size})")
        self.size = size


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range a ``Range`` header asks for, or None for the whole object.

    Single ranges only (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``); a header this does not
    understand, or several ranges, is ignored (the whole object is sent, as RFC 9110 allows).
    Raises ``RangeNotSatisfiable`` when the range starts past the end.
    """
    if not header:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:  # suffix: the last n bytes
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - suffix), size)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return ByteRange(start, end)
