"""Keyboard and mouse actions as QEMU input events: what the guest will see, checked before anything is sent."""

from __future__ import annotations

import pytest

from drivers.input_events import ABS_MAX, InputAction, InputRejected, batches_of


def _keys(batches):
    return [(e["data"]["key"]["data"], e["data"]["down"]) for batch in batches for e in batch if e["type"] == "key"]


def test_a_combination_is_pressed_in_order_and_released_in_reverse():
    assert _keys(batches_of(InputAction("key", keys=("Control", "c")), (800, 600))) == [
        ("ctrl", True),
        ("c", True),
        ("c", False),
        ("ctrl", False),
    ]


def test_text_is_typed_with_shift_where_a_us_keyboard_needs_it():
    typed = _keys(batches_of(InputAction("text", text="Hi!\n"), (800, 600)))
    assert typed == [
        ("shift", True), ("h", True), ("h", False), ("shift", False),
        ("i", True), ("i", False),
        ("shift", True), ("1", True), ("1", False), ("shift", False),
        ("ret", True), ("ret", False),
    ]  # fmt: skip


def test_screen_coordinates_are_scaled_to_the_absolute_pointer():
    batches = batches_of(InputAction("click", x=799, y=0, button="right"), (800, 600))
    axes = {e["data"]["axis"]: e["data"]["value"] for e in batches[0]}
    assert axes == {"x": ABS_MAX, "y": 0}
    buttons = [(e["data"]["button"], e["data"]["down"]) for batch in batches[1:] for e in batch]
    assert buttons == [("right", True), ("right", False)]
    middle = batches_of(InputAction("move", x=400, y=300), (801, 601))[0]
    assert [e["data"]["value"] for e in middle] == [round(ABS_MAX / 2)] * 2


def test_drag_and_scroll():
    drag = batches_of(InputAction("drag", x=10, y=10, to_x=20, to_y=30), (100, 100))
    assert [e["type"] for batch in drag for e in batch] == ["abs", "abs", "btn", "abs", "abs", "btn"]
    scroll = batches_of(InputAction("scroll", dy=-2), (100, 100))
    assert [e["data"]["button"] for batch in scroll for e in batch] == ["wheel-up"] * 4


@pytest.mark.parametrize(
    "action, reason",
    [
        (InputAction("key", keys=("hyper",)), "no key 'hyper'"),
        (InputAction("text", text="é"), "cannot be typed"),
        (InputAction("move", x=800, y=10), "outside the screen"),
        (InputAction("drag", x=1, y=1), "where to end"),
    ],
)
def test_what_cannot_be_sent_is_refused(action, reason):
    with pytest.raises(InputRejected, match=reason):
        batches_of(action, (800, 600))
