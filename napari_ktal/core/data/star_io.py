"""Reading STAR files (with :mod:`starfile`), every problem as one InputError naming the file."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def read_star_blocks(path: str | Path, *, as_text: bool = False) -> dict:
    """Every data block of a STAR file (a dict of dicts and DataFrames); InputError if unreadable.

    ``as_text``: every value as the text written in the file (nothing parsed as a number).
    """
    import starfile

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    try:
        blocks = starfile.read(path, always_dict=True)
        if as_text:
            names = sorted({c for b in blocks.values() for c in (b.columns if hasattr(b, "columns") else b)})
            blocks = starfile.read(path, always_dict=True, parse_as_string=names)
    except UnicodeDecodeError as err:
        raise InputError(path, "is not a text file", "a STAR file is text") from err
    except Exception as err:  # noqa: BLE001 (pandas and shlex raise many kinds for broken files)
        raise InputError(path, f"is not a readable STAR file ({type(err).__name__}: {err})") from err
    if not blocks:
        raise InputError(path, "holds no data block", "a STAR file has data_ blocks")
    return blocks
