"""Replies a candidate can send that are not well-formed answers, shared by the unit tests of
the judge and the hostile tests over HTTP. Each is (name, frame payload); none may ever
reach the test code as a value or an ordinary exception."""

from __future__ import annotations

import json

_DEEP = 1000


def _nested_tuple(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = {"tuple": [value]}
    return value


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


MALFORMED_CALL_REPLIES: list[tuple[str, bytes]] = [
    # not an object
    ("list", _j([1])),
    ("string", _j("value")),
    ("null", b"null"),
    ("number", b"1"),
    ("true", b"true"),
    # not JSON / not UTF-8
    ("truncated_json", b'{"value": '),
    ("not_utf8", b'{"value": "\xff\xfe"}'),
    ("empty", b""),
    ("trailing_garbage", b'{"value": 1} x'),
    # JSON that Python accepts but the wire does not
    ("nan_constant", b'{"value": NaN}'),
    ("infinity_constant", b'{"value": -Infinity}'),
    ("overflowing_float", b'{"value": 1e999}'),
    ("duplicate_key", b'{"value": 1, "value": 2}'),
    ("int_beyond_digit_limit", b'{"value": ' + b"9" * 5000 + b"}"),
    ("deep_list", b'{"value": ' + b"[" * _DEEP + b"]" * _DEEP + b"}"),
    ("very_deep_list", b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("deep_tuple", _j({"value": _nested_tuple(150)})),
    # the wrong keys for a call
    ("extra_key", _j({"value": 1, "extra": 2})),
    ("no_key", _j({})),
    ("unknown_key", _j({"answer": 1})),
    ("callable_to_a_call", _j({"callable": True})),
    ("missing_to_a_call", _j({"missing": True})),
    ("loaded_to_a_call", _j({"loaded": True})),
    ("value_and_raise", _j({"value": 1, "raise": ["ValueError", "x"]})),
    # exceptions of the wrong shape
    ("raise_string", _j({"raise": "ValueError"})),
    ("raise_one_item", _j({"raise": ["ValueError"]})),
    ("raise_three_items", _j({"raise": ["ValueError", "x", "y"]})),
    ("raise_numbers", _j({"raise": [1, 2]})),
    ("raise_bad_name", _j({"raise": ["Value Error!", "x"]})),
    ("raise_huge_message", _j({"raise": ["ValueError", "x" * 50_000]})),
    ("raise_null", _j({"raise": None})),
    # tagged values of the wrong shape
    ("int_decimal_tag", _j({"value": {"int": "12"}})),
    ("int_number_tag", _j({"value": {"int": 12}})),
    ("int_junk_tag", _j({"value": {"int": "0xzz"}})),
    ("float_tag_finite", _j({"value": {"float": "1.5"}})),
    ("float_tag_number", _j({"value": {"float": 1.5}})),
    ("tuple_not_list", _j({"value": {"tuple": 5}})),
    ("dict_not_pairs", _j({"value": {"dict": [[1]]}})),
    ("dict_not_list", _j({"value": {"dict": {"a": 1}}})),
    ("dict_unhashable_key", _j({"value": {"dict": [[[1], 2]]}})),
    ("set_unhashable_member", _j({"value": {"set": [[1]]}})),
    ("frozenset_of_dicts", _j({"value": {"frozenset": [{"dict": []}]}})),
    ("bytes_not_base64", _j({"value": {"bytes": "!!!"}})),
    ("bytes_not_text", _j({"value": {"bytes": 5}})),
    ("bytes_non_ascii", _j({"value": {"bytes": "é"}})),
    ("complex_one_part", _j({"value": {"complex": [1.0]}})),
    ("complex_strings", _j({"value": {"complex": ["1", "2"]}})),
    ("unknown_tag", _j({"value": {"object": "os.system"}})),
    ("two_tags", _j({"value": {"tuple": [], "set": []}})),
    ("empty_tag", _j({"value": {}})),
    ("nested_bad_tag", _j({"value": [1, [2, {"tuple": "x"}]]})),
]
