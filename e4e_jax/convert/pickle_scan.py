"""Static look at a checkpoint file: its container format and the globals its pickle names.

Nothing is unpickled and nothing is imported: the opcodes are read with `pickletools.genops`, so
this is safe on any file. The converters use it to explain a refused file (which classes it
needs, whether it is a torch.save file at all); torch's own error names at most one class and
does not understand protocol-4 pickles that torch.save never writes.
"""
from __future__ import annotations

import io
import pickletools
import zipfile

# the first pickle of a legacy (pre-1.6, non-zip) torch.save file is this number
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# a legacy file holds magic, protocol, sys_info, the object, then the storage keys
_LEGACY_PICKLES = 5

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING", "SHORT_BINBYTES"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def _one_pickle(f) -> set[str]:
    """The globals of the pickle starting at f's position; f ends after its STOP.

    STACK_GLOBAL takes module and name from the two values pushed before it, which may come from
    the memo, so string pushes and memo entries are tracked (other values as None)."""
    found: set[str] = set()
    pushed: list = []
    memo: dict = {}
    for op, arg, _ in pickletools.genops(f):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.add(".".join(str(arg).split(" ", 1)))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            found.add(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str)
                      else "<a global built at load time>")
            pushed.append(None)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in _PUT_OPS:
            memo[arg] = pushed[-1] if pushed else None
        elif name in _GET_OPS:
            pushed.append(memo.get(arg))
        elif name in _STRING_OPS:
            pushed.append(arg if isinstance(arg, str) else None)
        elif name not in ("PROTO", "FRAME", "STOP", "MARK"):
            pushed.append(None)
        del pushed[:-2]  # only the last two values ever matter
    return found


def _first_ops(f, n: int = 3) -> list:
    ops = []
    for op, arg, _ in pickletools.genops(f):
        ops.append((op.name, arg))
        if len(ops) == n or op.name == "STOP":
            break
    return ops


def file_kind(path: str) -> str:
    """'zip' (torch.save since 1.6), 'broken-zip' (starts like one but has no readable
    directory: truncated), 'legacy' (older torch.save), 'pickle' (a plain pickle, e.g. a
    StyleGAN2-ADA .pkl) or 'other' (neither: corrupt, an HTML error page, ...)."""
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            return "broken-zip"
        f.seek(0)
        try:
            ops = _first_ops(f)
        except Exception:  # genops raises ValueError / various errors on non-pickle bytes
            return "other"
    if not ops or ops[0][0] != "PROTO":  # torch.save and pickle.dump always start with PROTO
        return "other"
    if any(name.startswith("LONG") and arg == LEGACY_MAGIC for name, arg in ops):
        return "legacy"
    return "pickle"


def _zip_data_pickle(path: str) -> bytes:
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if not names:
            raise ValueError("no data.pkl in the archive")
        return z.read(min(names, key=len))


def pickle_globals(path: str) -> set[str]:
    """Every `module.name` the file's object pickle refers to (GLOBAL / INST / STACK_GLOBAL).

    zip files: their data.pkl; legacy torch files: the leading pickles; plain pickles: the first.
    Raises ValueError (or zipfile / pickle errors) when the file cannot be scanned."""
    kind = file_kind(path)
    if kind == "zip":
        return _one_pickle(io.BytesIO(_zip_data_pickle(path)))
    if kind in ("other", "broken-zip"):
        raise ValueError(f"cannot scan a file of kind {kind!r}")
    found: set[str] = set()
    with open(path, "rb") as f:
        for _ in range(_LEGACY_PICKLES if kind == "legacy" else 1):
            try:
                found |= _one_pickle(f)
            except Exception:  # end of the pickles (raw storage bytes follow)
                break
    return found
