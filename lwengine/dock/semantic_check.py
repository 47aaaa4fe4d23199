"""Upload-time checks of semantic specifications, as the Beimingwu market makes them.

* :data:`SEMANTIC_VOCABULARY`: the semantic vocabulary of ``learnware`` 0.4.0.post1
  (``learnware.config.C["semantic_specs"]``), served by ``GET /engine/semantic_specification``.
* :func:`easy_semantic_check`: the reference's ``EasySemanticChecker.check_semantic_spec`` rules
  (the client runs the same rules before it uploads; a dock must not trust that).
* :func:`normalize_semantic`: Beimingwu's ``parse_semantic_specification`` (exactly one Data and one
  Task value; ``Input`` / ``Output`` with a ``Dimension`` where the task needs them, JSON strings
  accepted, emptied where it does not).
* :func:`upload_semantic_check`: Beimingwu's ``check_semantic_spec`` (the easy checker, Name 5-50 and
  Description 10-10000 characters) and ``check_data_type`` (the Data type matches the statistical
  spec type; a table's Input Dimension equals the spec's feature dimension).

Every check returns ``(ok, message)``; nothing raises on hostile input.
"""
from __future__ import annotations

import copy
import json

__all__ = ["SEMANTIC_VOCABULARY", "SPEC_TYPE_OF_DATA", "easy_semantic_check", "normalize_semantic",
           "upload_semantic_check", "data_type_check"]

SEMANTIC_VOCABULARY = {
    "Data": {"Values": ["Table", "Image", "Text"], "Type": "Class"},
    "Task": {"Values": ["Classification", "Regression", "Feature Extraction", "Segmentation", "Object Detection",
                        "Text Generation", "Others"], "Type": "Class"},
    "Model": {"Values": ["Base Model", "Fine-tuned Model", "PEFT Model", "Others"], "Type": "Optional"},
    "Library": {"Values": ["Scikit-learn", "PyTorch", "TensorFlow", "Others"], "Type": "Class"},
    "Scenario": {"Values": ["Business", "Financial", "Health", "Politics", "Computer", "Internet", "Traffic",
                            "Nature", "Fashion", "Industry", "Agriculture", "Education", "Entertainment",
                            "Architecture", "Others"], "Type": "Tag"},
    "Description": {"Values": None, "Type": "String"},
    "Name": {"Values": None, "Type": "String"},
    "License": {"Values": ["MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "GPL-2.0", "GPL-3.0", "LGPL-2.1",
                           "LGPL-3.0", "AGPL-3.0", "ECL-2.0", "AFL-3.0", "CC-BY-4.0", "CC-BY-SA-4.0", "Others"],
                "Type": "Class"},
}

# Beimingwu's check_data_type: the spec type each Data class needs.
SPEC_TYPE_OF_DATA = {"Table": "RKMETableSpecification", "Image": "RKMEImageSpecification",
                     "Text": "RKMETextSpecification"}
_LEGACY_TABLE = "RKMEStatSpecification"

_TASKS_BY_DATA = {
    "Table": ("Classification", "Regression", "Feature Extraction", "Others"),
    "Image": ("Classification", "Regression", "Feature Extraction", "Segmentation", "Object Detection", "Others"),
    "Text": ("Classification", "Regression", "Feature Extraction", "Text Generation", "Others"),
}


class _Invalid(Exception):
    pass


def _require(cond, msg):
    if not cond:
        raise _Invalid(msg)


def _dimension_keys(section, what):
    dim = section["Dimension"]
    for k, v in section["Description"].items():
        _require(0 <= int(k) < dim, f"Dimension number in [0, {dim})")
        _require(isinstance(v, str), "Description must be string")
    return dim


def easy_semantic_check(semantic, vocabulary: dict = SEMANTIC_VOCABULARY) -> tuple:
    """``EasySemanticChecker.check_semantic_spec``: ``(True, msg)`` when the reference would not
    call the spec invalid, else ``(False, reason)``.  (The reference's quirks are kept: ``Model`` is
    optional in the vocabulary loop but required for Table and Image data.)"""
    try:
        _require(isinstance(semantic, dict), "a semantic specification must be a JSON object")
        for key, conf in vocabulary.items():
            if conf["Type"] == "Optional" and key not in semantic:
                continue
            _require(key in semantic and isinstance(semantic[key], dict), f"{key} is missing")
            entry = semantic[key]
            value = entry["Values"]
            valid = conf["Type"]
            _require(entry.get("Type") == valid, f"{key} type mismatch")
            if valid in ("Class", "Optional"):
                _require(isinstance(value, list) and len(value) == 1, f"{key} must be unique")
                _require(isinstance(value[0], str) and value[0] in conf["Values"], f"{key} must be in {conf['Values']}")
            elif valid == "Tag":
                _require(isinstance(value, list) and len(value) >= 1, f"{key} cannot be empty")
                for v in value:
                    _require(isinstance(v, str) and v in conf["Values"], f"{key} must be in {conf['Values']}")
            elif valid == "String":
                _require(isinstance(value, str), f"{key} must be string")
                _require(len(value) >= 1, f"{key} cannot be empty")
        data = semantic["Data"]["Values"][0]
        task = semantic["Task"]["Values"][0]
        if data == "Table":
            _require(semantic.get("Input") is not None, "Lack of input semantics")
            _dimension_keys(semantic["Input"], "Input")
        if data in _TASKS_BY_DATA:
            _require(task in _TASKS_BY_DATA[data], f"Task {task!r} is not allowed for {data} data")
        if data in ("Table", "Image"):
            _require("Model" in semantic and semantic["Model"]["Values"][0] == "Others",
                     f"Model must be 'Others' for {data} data")
        if task in ("Classification", "Regression"):
            _require(semantic.get("Output") is not None, "Lack of output semantics")
            dim = _dimension_keys(semantic["Output"], "Output")
            _require(dim > 1 or task == "Regression", "Classification task must have dimension > 1")
        return True, "EasySemanticChecker Success"
    except _Invalid as exc:
        return False, f"semantic specification is not valid: {exc}"
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        return False, f"semantic specification is not valid: {type(exc).__name__}: {exc}"


def normalize_semantic(raw) -> tuple:
    """Beimingwu's ``parse_semantic_specification`` -> ``(semantic or None, message)``.  ``raw`` is
    the JSON string (or an already decoded object); the result is a fresh dict."""
    try:
        sem = json.loads(raw) if isinstance(raw, (str, bytes)) else copy.deepcopy(raw)
    except (ValueError, TypeError):
        return None, "Semantic specification error"
    try:
        if not isinstance(sem, dict):
            return None, "Semantic specification error: not a JSON object"
        data_values = sem["Data"]["Values"]
        if not isinstance(data_values, list) or len(data_values) != 1:
            return None, "data type values is not 1"
        if data_values[0] == "Table":
            ok, sec = _section(sem.get("Input"), "Input")
            if not ok:
                return None, sec
            sem["Input"] = sec
        else:
            sem["Input"] = {}
        task_values = sem["Task"]["Values"]
        if not isinstance(task_values, list) or len(task_values) != 1:
            return None, "Output is not 1"  # Beimingwu's message for a Task without exactly one value
        if task_values[0] in ("Classification", "Regression"):
            ok, sec = _section(sem.get("Output"), "Output")
            if not ok:
                return None, sec
            sem["Output"] = sec
        else:
            sem["Output"] = {}
        return sem, ""
    except (KeyError, TypeError, IndexError) as exc:
        return None, f"Semantic specification error: missing or malformed {exc}"


def _section(value, what):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return False, f"{what} section of semantic is not a json"
    if not isinstance(value, dict):
        return False, f"{what} section of semantic is not a json or dict"
    if value.get("Dimension") is None:
        return False, f"{what} has no dimension"
    return True, value


def data_type_check(semantic: dict, spec_type: str, feature_dim: int | None) -> tuple:
    """Beimingwu's ``check_data_type``: the Data class must match the spec type (``spec_type`` the
    class name in learnware.yaml); a table's Input Dimension must equal ``feature_dim``."""
    try:
        data = semantic["Data"]["Values"][0]
    except (KeyError, IndexError, TypeError):
        return False, "data_type must be in ['Table', 'Image', 'Text']"
    if spec_type == _LEGACY_TABLE:
        spec_type = SPEC_TYPE_OF_DATA["Table"]
    if data not in SPEC_TYPE_OF_DATA:
        return False, "data_type must be in ['Table', 'Image', 'Text']"
    if spec_type != SPEC_TYPE_OF_DATA[data]:
        return False, f"data type {data} does not match the statistical specification type {spec_type}"
    if data == "Table":
        try:
            dim_table = int(semantic["Input"]["Dimension"])
        except (KeyError, TypeError, ValueError):
            return False, "Input has no integer Dimension"
        if dim_table != feature_dim:
            return False, f"dimension of table is {dim_table}, dimension of rkme is {feature_dim}"
    return True, ""


def upload_semantic_check(semantic: dict, *, min_name: int = 5, max_name: int = 50, min_description: int = 10,
                          max_description: int = 10_000) -> tuple:
    """Beimingwu's ``check_semantic_spec``: the easy checker plus Name / Description lengths."""
    ok, msg = easy_semantic_check(semantic)
    if not ok:
        return False, msg
    name, desc = semantic["Name"]["Values"], semantic["Description"]["Values"]
    if len(name) < min_name:
        return False, f"Name length is less than {min_name}"
    if len(name) > max_name:
        return False, f"Name length is more than {max_name}"
    if len(desc) < min_description:
        return False, f"Description length is less than {min_description}"
    if len(desc) > max_description:
        return False, f"Description length is more than {max_description}"
    return True, ""
