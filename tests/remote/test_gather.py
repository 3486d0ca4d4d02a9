"""Gathering: one endpoint, model and batch per remote batch, under both limits, in order."""

from __future__ import annotations

from runner.remote.gather import Sized, gather


def sized(item: int, size: int = 10, endpoint: str = "/g", model: str = "m") -> Sized[int]:
    return Sized(item=item, batch_id="b", endpoint=endpoint, model=model, size=size)


def test_groups_close_at_the_line_limit() -> None:
    found = gather([sized(i) for i in range(5)], max_lines=2, max_bytes=1000)
    assert [g.items for g in found.groups] == [[0, 1], [2, 3], [4]]


def test_groups_close_before_the_byte_limit() -> None:
    found = gather([sized(i, size=40) for i in range(5)], max_lines=100, max_bytes=100)
    assert [g.items for g in found.groups] == [[0, 1], [2, 3], [4]]
    assert all(g.bytes <= 100 for g in found.groups)


def test_endpoints_and_models_never_share_a_remote_batch() -> None:
    items = [sized(0), sized(1, endpoint="/e"), sized(2, model="n"), sized(3)]
    found = gather(items, max_lines=10, max_bytes=1000)
    assert sorted(g.items for g in found.groups) == [[0, 3], [1], [2]]


def test_a_line_larger_than_any_input_file_is_set_apart() -> None:
    found = gather([sized(0, size=5), sized(1, size=500)], max_lines=10, max_bytes=100)
    assert [g.items for g in found.groups] == [[0]]
    assert found.too_large == [1]
