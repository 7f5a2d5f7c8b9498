"""Where Claude Code keeps a project's transcripts, computed as the bundled CLI (2.1.330) does.

The folder under `<config dir>/projects/` is the project's real path with every UTF-16 code
unit that is not an ASCII letter or digit replaced by `-`; a name longer than 200 characters is
cut to 200 and suffixed with `-` and a base-36 hash of the full path (JavaScript's classic
`hash = hash * 31 + code unit` over 32-bit integers). The encoding is lossy (`a_b`, `a.b` and
`a b` collide), so a transcript's own `cwd` and `sessionId` identify it, never the folder name.
"""

from __future__ import annotations

MAX_DIR_NAME = 200
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _utf16_code_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)]


def js_string_hash(text: str) -> int:
    """JavaScript `(h << 5) - h + charCodeAt(i) | 0` folded over the string, made absolute."""
    value = 0
    for unit in _utf16_code_units(text):
        value = (value * 31 + unit) & 0xFFFFFFFF
    if value >= 0x80000000:
        value -= 0x100000000
    return abs(value)


def to_base36(number: int) -> str:
    if number == 0:
        return "0"
    digits = []
    while number:
        number, remainder = divmod(number, 36)
        digits.append(_BASE36[remainder])
    return "".join(reversed(digits))


def encode_project_dir_name(project_path: str) -> str:
    encoded = "".join(
        chr(unit) if unit < 128 and chr(unit).isalnum() else "-"
        for unit in _utf16_code_units(project_path)
    )
    if len(encoded) <= MAX_DIR_NAME:
        return encoded
    return f"{encoded[:MAX_DIR_NAME]}-{to_base36(js_string_hash(project_path))}"
