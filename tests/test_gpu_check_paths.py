"""benchmarks/gpu_check.py's end-to-end section (NNGP kernel, search, certified top-k, image fit) runs
and agrees with itself on a machine without a GPU (both sides on the CPU, tiny sizes): the GPU run of
that script then only swaps the device."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest



def test_end_to_end_section_on_cpu():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    rec = gpu_check.Recorder()
    # (the image fit part is left out: its CPU run alone takes ~20 s here; the fit is tested in test_image_*)
    rows = gpu_check.end_to_end(rec, 1, True, devices=("cpu", "cpu"), sizes=(300,), image=False)
    verdicts = {c["kernel"]: c["verdict"] for c in rec.checks}
    assert verdicts == {"nngp_kernel": "pass", "search": "pass", "topk_certified": "pass"}, \
        [(c["kernel"], c.get("error"), c.get("metrics")) for c in rec.checks]
    assert {r["kernel"] for r in rows} >= {"nngp_kernel", "search", "topk_certified"}
