"""``json_subset``: the topotests-style JSON comparison the lab tests use inside ``wait_until``."""

from __future__ import annotations

from alt_router.lab import json_mismatch, json_subset, ordered_list

STATUS = {
    "node": "a",
    "peers": {"b": {"up": True, "since": 12.5, "received": 3}, "c": {"up": False}},
    "routes": [{"prefix": "153.16.0.0/16", "as_path": [65002]}, {"prefix": "153.17.0.0/16", "as_path": []}],
}


def test_extra_keys_and_elements_in_the_actual_document_do_not_matter() -> None:
    assert json_subset(STATUS, {"peers": {"b": {"up": True}}})
    assert json_subset(STATUS, {"routes": [{"prefix": "153.17.0.0/16"}, {"prefix": "153.16.0.0/16"}]})
    assert json_subset(STATUS, {"peers": {"b": {"since": 12.5, "received": 3.0}}})  # 3 == 3.0 in JSON


def test_the_first_difference_is_named_by_its_path() -> None:
    assert json_mismatch(STATUS, {"peers": {"c": {"up": True}}}) == "$.peers.c.up: expected True, got False"
    assert json_mismatch(STATUS, {"peers": {"d": {}}}) == "$.peers.d: missing (expected {})"
    assert json_mismatch(STATUS, {"node": 1}) == "$.node: expected 1, got 'a'"
    assert json_mismatch(STATUS, {"peers": {"b": {"received": True}}}) is not None  # True is not 1
    why = json_mismatch(STATUS, {"routes": [{"prefix": "153.18.0.0/16"}]})
    assert why is not None and why.startswith("$.routes[0]: no element matches")


def test_none_means_absent() -> None:
    assert json_subset(STATUS, {"peers": {"d": None}})
    assert json_mismatch(STATUS, {"peers": {"c": None}}) == "$.peers.c: expected absent, got {'up': False}"


def test_list_elements_are_matched_once_each_and_in_order_when_asked() -> None:
    # Two expected elements cannot both match the same actual one.
    assert not json_subset([{"a": 1}], [{"a": 1}, {"a": 1}])
    assert json_subset([3, 1, 2], [1, 3])
    assert json_subset([1, 2], ordered_list([1, 2])) and not json_subset([2, 1], ordered_list([1, 2]))
    assert json_mismatch([1], ordered_list([1, 2])) == "$: expected a list of 2, got [1]"
