"""Keyboard and mouse input as QEMU's input events (QMP ``input-send-event``), in screenshot coordinates.

Keys are QEMU's key codes (qcodes) by name, with a few common aliases;
text is typed on a US layout, shift included. The pointer is absolute (the
domain has a USB tablet), so coordinates are scaled from the screen's pixels
to QEMU's 0..32767.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

ABS_MAX = 0x7FFF
ALIASES = {
    "control": "ctrl",
    "enter": "ret",
    "return": "ret",
    "escape": "esc",
    "space": "spc",
    "meta": "meta_l",
    "super": "meta_l",
    "win": "meta_l",
    "cmd": "meta_l",
    "pageup": "pgup",
    "pagedown": "pgdn",
    "del": "delete",
    "ins": "insert",
}
NAMED = {
    "ctrl", "ctrl_r", "shift", "shift_r", "alt", "alt_r", "meta_l", "meta_r", "ret", "esc", "backspace", "tab",
    "spc", "up", "down", "left", "right", "delete", "insert", "home", "end", "pgup", "pgdn", "caps_lock", "menu",
    "minus", "equal", "bracket_left", "bracket_right", "semicolon", "apostrophe", "grave_accent", "backslash",
    "comma", "dot", "slash", *(f"f{n}" for n in range(1, 13)),
    *string.ascii_lowercase, *string.digits,
}  # fmt: skip
_PLAIN = {"-": "minus", "=": "equal", "[": "bracket_left", "]": "bracket_right", ";": "semicolon",
          "'": "apostrophe", "`": "grave_accent", "\\": "backslash", ",": "comma", ".": "dot", "/": "slash",
          " ": "spc", "\n": "ret", "\t": "tab"}  # fmt: skip
_SHIFTED = dict(zip(")!@#$%^&*(", string.digits, strict=True)) | {
    "_": "minus", "+": "equal", "{": "bracket_left", "}": "bracket_right", ":": "semicolon", '"': "apostrophe",
    "~": "grave_accent", "|": "backslash", "<": "comma", ">": "dot", "?": "slash",
}  # fmt: skip
BUTTONS = {"left", "right", "middle"}
# The most batches (each one input-send-event, 10 ms apart) one request may
# send: about ten seconds of input, 500 typed characters. More is refused
# whole, before anything is sent, so no request holds a slot for hours.
MAX_BATCHES = 1000


class InputRejected(ValueError):
    """An action names a key, a character or a place that cannot be sent."""


@dataclass(frozen=True)
class InputAction:
    """One step of keyboard or mouse input: key, text, move, click, double_click, drag or scroll."""

    type: str
    keys: tuple[str, ...] = ()
    text: str = ""
    x: int | None = None
    y: int | None = None
    to_x: int | None = None
    to_y: int | None = None
    button: str = "left"
    dx: int = 0
    dy: int = 0


def qcode(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in NAMED:
        raise InputRejected(f"no key {name!r}; keys are QEMU's key names (a, 1, ctrl, shift, alt, ret, f5, …)")
    return key


def _key(code: str, down: bool) -> dict:
    return {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": code}}}


def chord(keys: tuple[str, ...]) -> list[list[dict]]:
    """Press the keys in order, then release them in reverse: two batches."""
    codes = [qcode(k) for k in keys]
    return [[_key(c, True) for c in codes], [_key(c, False) for c in reversed(codes)]]


def typed(text: str) -> list[list[dict]]:
    batches = []
    for character in text:
        if character in _SHIFTED:
            batches += chord(("shift", _SHIFTED[character]))
        elif character in _PLAIN or character in NAMED:
            batches += chord((_PLAIN.get(character, character),))
        elif character in string.ascii_uppercase:
            batches += chord(("shift", character.lower()))
        else:
            raise InputRejected(f"{character!r} cannot be typed on a US keyboard; send keys instead")
    return batches


def _moved(x: int, y: int, screen: tuple[int, int]) -> list[dict]:
    width, height = screen
    if not (0 <= x < width and 0 <= y < height):
        raise InputRejected(f"({x}, {y}) is outside the screen, which is {width}x{height}")
    return [
        {"type": "abs", "data": {"axis": "x", "value": round(x * ABS_MAX / max(width - 1, 1))}},
        {"type": "abs", "data": {"axis": "y", "value": round(y * ABS_MAX / max(height - 1, 1))}},
    ]


def _button(button: str, down: bool) -> dict:
    if button not in BUTTONS and not button.startswith("wheel-"):
        raise InputRejected(f"no mouse button {button!r}; the buttons are left, right and middle")
    return {"type": "btn", "data": {"down": down, "button": button}}


def _click(button: str, times: int) -> list[list[dict]]:
    return [[_button(button, down)] for _ in range(times) for down in (True, False)]


def all_batches(actions: tuple[InputAction, ...], screen: tuple[int, int]) -> list[list[dict]]:
    """Every action's batches, in order; InputRejected past MAX_BATCHES, built no further than one action past."""
    batches: list[list[dict]] = []
    for action in actions:
        batches += batches_of(action, screen)
        if len(batches) > MAX_BATCHES:
            raise InputRejected(
                f"the actions make more than {MAX_BATCHES} input events (about 10 s of input);"
                " send them in several requests"
            )
    return batches


def batches_of(action: InputAction, screen: tuple[int, int]) -> list[list[dict]]:
    """The action as batches of events, each sent by one input-send-event, in order."""
    here = _moved(action.x, action.y, screen) if action.x is not None and action.y is not None else []
    if action.type == "key":
        return chord(action.keys)
    if action.type == "text":
        return typed(action.text)
    if action.type == "move":
        return [here]
    if action.type in ("click", "double_click"):
        return [here, *_click(action.button, 2 if action.type == "double_click" else 1)]
    if action.type == "drag":
        if action.to_x is None or action.to_y is None:
            raise InputRejected("a drag needs where to end (toX, toY)")
        end = _moved(action.to_x, action.to_y, screen)
        return [here, [_button(action.button, True)], end, [_button(action.button, False)]]
    if action.type == "scroll":
        steps = [("wheel-up" if action.dy < 0 else "wheel-down")] * abs(action.dy)
        steps += [("wheel-left" if action.dx < 0 else "wheel-right")] * abs(action.dx)
        return [here, *(batch for step in steps for batch in _click(step, 1))]
    raise InputRejected(f"no input action {action.type!r}")
