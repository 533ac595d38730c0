"""`gptwaves.jsonable`: the one NaN/inf -> None rule of every JSON gptwaves writes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gptwaves.jsonable import finite_or_none, jsonable


def test_plain_values_pass_and_non_finite_become_none():
    obj = {"a": 1.5, "b": float("nan"), "c": float("inf"), "d": -float("inf"), "e": 3, "f": True, "g": None,
           "h": "x", 4: (1, 2.0)}
    assert jsonable(obj) == {"a": 1.5, "b": None, "c": None, "d": None, "e": 3, "f": True, "g": None, "h": "x",
                             "4": [1, 2.0]}


def test_numpy_values_become_python_types():
    got = jsonable({"f": np.float64(2.5), "f32": np.float32(0.5), "nan": np.float64("nan"), "i": np.int64(7),
                    "b": np.bool_(False), "arr": np.array([1.0, np.nan, np.inf]), "ints": np.arange(3),
                    "m": np.zeros((2, 2)), "p": Path("a/b"), "s": np.str_("z")})
    assert got == {"f": 2.5, "f32": 0.5, "nan": None, "i": 7, "b": False, "arr": [1.0, None, None],
                   "ints": [0, 1, 2], "m": [[0.0, 0.0], [0.0, 0.0]], "p": "a/b", "s": "z"}
    for v in (got["f"], got["f32"], got["arr"][0]):
        assert type(v) is float
    assert type(got["i"]) is int and type(got["b"]) is bool


def test_subclasses_of_plain_types_are_converted():
    from enum import IntEnum

    class Level(IntEnum):
        ONE = 1

    class F(float):
        pass

    got = jsonable([Level.ONE, F(float("nan")), F(1.25)])
    assert got == [1, None, 1.25] and type(got[0]) is int and type(got[2]) is float


def test_finite_or_none():
    assert finite_or_none(1) == 1.0 and finite_or_none(np.float32(2)) == 2.0
    assert finite_or_none(math.inf) is None and finite_or_none("x") is None and finite_or_none(None) is None
    assert finite_or_none(True) == 1.0
