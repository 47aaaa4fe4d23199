"""Fast spec loading (lwengine.spec_loading): bit-identical to RKMESpec.load, same errors."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex, load_spec
from lwengine.specs import loads_spec
from lwengine import spec_loading
from lwengine.spec_loading import parse_spec_bytes, read_spec_file, read_spec_files


def _same_spec(a: RKMESpec, b: RKMESpec) -> bool:
    ga, gb = getattr(a, "gamma", None), getattr(b, "gamma", None)  # image specs have no gamma
    return (type(a) is type(b) and a.z.dtype == b.z.dtype and a.z.shape == b.z.shape
            and a.z.tobytes() == b.z.tobytes()
            and a.beta.tobytes() == b.beta.tobytes() and type(ga) is type(gb)
            and np.float64(ga if ga is not None else 0).tobytes() == np.float64(gb if gb is not None else 0).tobytes()
            and a.num_points == b.num_points and type(a.num_points) is type(b.num_points))


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except Exception as exc:  # noqa: BLE001 - compared below
        return "err", (type(exc), str(exc))


def _assert_same(path):
    """read_spec_file(path) gives what lwengine.load_spec(path) gives: the same spec or the same error."""
    old, new = _outcome(load_spec, path), _outcome(read_spec_file, path)
    with open(path, "rb") as f:
        data = f.read()
    by_bytes = _outcome(parse_spec_bytes, data, str(path))
    via_loads = _outcome(loads_spec, data, str(path))
    assert old[0] == new[0], (path, old, new)
    assert via_loads[0] == by_bytes[0], (path, via_loads, by_bytes)
    if old[0] == "ok":
        assert _same_spec(old[1], new[1]) and _same_spec(via_loads[1], by_bytes[1])
    else:
        assert old[1] == new[1] and via_loads[1] == by_bytes[1]
    return old


def _tricky_numbers(rng, n):
    """Float and integer literals in many spellings (shortest repr, long mantissas, subnormals, huge)."""
    out = []
    for i in range(n):
        kind = i % 9
        x = float(rng.normal() * 10.0 ** rng.integers(-30, 30))
        if kind == 0:
            out.append(repr(x))
        elif kind == 1:
            out.append(f"{x:.17g}")
        elif kind == 2:
            out.append(f"{x:.25e}")
        elif kind == 3:
            out.append(f"{x:.3f}")
        elif kind == 4:
            out.append(repr(float(rng.random() * 5e-324 * rng.integers(1, 2 ** 20))))  # subnormals
        elif kind == 5:
            out.append(str(int(rng.integers(-2 ** 62, 2 ** 62))))
        elif kind == 6:
            out.append(repr(float(rng.normal() * 1e140)))  # |z| >= 1e150 is refused (lwengine.limits)
        elif kind == 7:
            out.append(f"{rng.normal():.40f}")  # beyond 17 significant digits
        else:
            out.append(rng.choice(["-0.0", "0", "-0", "1E5", "1e-400", "2.2250738585072011e-308",
                                   "0.1000000000000000055511151231257827021181583404541015625000001"]))
    return out


def test_tricky_numbers_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    for f in range(60):
        K, d = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        nums = _tricky_numbers(rng, K * d + K)
        z = "[" + ",".join("[" + ",".join(nums[r * d:(r + 1) * d]) + "]" for r in range(K)) + "]"
        beta = "[" + ",".join(nums[K * d:]) + "]"
        gamma = rng.choice(["0.1", "1", "2.5e-3", repr(float(rng.random()) + 0.01)])
        npts = rng.choice(["7", "7.0", "1000", str(K)])
        p = tmp_path / f"s{f}.json"
        p.write_text(f'{{"z":{z},"beta":{beta},"gamma":{gamma},"num_points":{npts},'
                     f'"type":"RKMETableSpecification","extra":[1,2]}}')
        assert _assert_same(p)[0] == "ok"


@pytest.mark.parametrize("text", [
    '{"z":[[1.0,2.0]],"beta":[1.0],"gamma":0.1,"num_points":18446744073709551616}',   # > 64-bit int
    '{"z":[[18446744073709551616, 1]],"beta":[1.0],"gamma":0.1,"num_points":3}',
    '{"z":[[18446744073709551616]],"beta":[1],"gamma":0.1,"num_points":3}',
    '{"z":[[-9223372036854775809, 0.5]],"beta":[1.0],"gamma":0.1,"num_points":3}',
    '{"z":[[9223372036854775808]],"beta":[1.0],"gamma":0.1,"num_points":3}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":100000000000000000000000000000,"num_points":3}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":3,"type":18446744073709551616}',
    '{"z":[[1e400, 1.0]],"beta":[1.0],"gamma":0.1,"num_points":3}',
    '{"z":[[NaN, Infinity]],"beta":[-Infinity],"gamma":0.1,"num_points":3}',
    '\ufeff{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":3}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":3,"s":"\\ud800"}',
    '{"z":[[1.0],[2.0, 3.0]],"beta":[1.0, 2.0],"gamma":0.1,"num_points":3}',
    '{"z":[["a"]],"beta":[1.0],"gamma":0.1,"num_points":3}',
    '{"z":[[true]],"beta":[1.0],"gamma":0.1,"num_points":3}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":0.1}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":-1,"num_points":3}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":2.5}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":3,"type":"RKMEImageSpecification"}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":3,"type":"RKMEStatSpecification"}',
    '{"z":[[1.0]],"beta":[1.0, 2.0],"gamma":0.1,"num_points":3}',
    '{"z":[],"beta":[],"gamma":0.1,"num_points":3}',
    '{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":3,"z":[[2.0]]}',  # duplicate key: last wins
    '{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":3',
    '[1, 2]', '', '   ', 'null',
])
def test_edge_and_error_files_same_as_load(tmp_path, text):
    p = tmp_path / "x.json"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    _assert_same(p)


def test_invalid_utf8_same_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b'{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":3,"s":"\xff\xfe"}')
    assert _assert_same(p)[0] == "err"
    q = tmp_path / "missing.json"
    assert _outcome(read_spec_file, q) == _outcome(RKMESpec.load, q)


def test_fixture_specs_bit_identical(fixtures_dir):
    n = 0
    for root, _, files in os.walk(fixtures_dir.parent):
        for name in files:
            if not name.endswith(".json"):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                head = f.read(4096)
            if b'"beta"' not in head and b'"z"' not in head:
                continue
            if _assert_same(path)[0] == "ok":
                n += 1
    assert n > 0


def _write_market(folder, n, rng, K=(1, 6), d=3):
    specs = []
    for i in range(n):
        k = int(rng.integers(*K))
        s = RKMESpec(rng.normal(size=(k, d)), rng.random(k), 0.1, int(rng.integers(1, 100)))
        s.save(folder / f"m{i:05d}.json")
        specs.append(s)
    return specs


def test_workers_bit_identical_with_errors(tmp_path):
    rng = np.random.default_rng(1)
    _write_market(tmp_path, 2 * spec_loading._MIN_SHARE + 10, rng)
    (tmp_path / "m00003.json").write_text('{"z": [[1.0]], "beta": [1.0]}')       # in the parent's share
    (tmp_path / "m00500.json").write_text('{"z": [[1.0, 2.0], [3.0]], "beta": [1, 1], "gamma": 0.1, '
                                          '"num_points": 2}')                  # in the worker's share
    (tmp_path / "m00510.json").write_text('{"z": [[NaN]], "beta": [1.0], "gamma": 0.1, "num_points": 1}')
    paths = sorted(str(p) for p in tmp_path.iterdir())
    got = read_spec_files(paths, workers=2)
    assert len(got) == len(paths)
    for p, g in zip(paths, got):
        want = _outcome(RKMESpec.load, p)
        if want[0] == "ok":
            assert isinstance(g, RKMESpec) and _same_spec(want[1], g), p
        else:
            assert isinstance(g, BaseException) and (type(g), str(g)) == want[1], p
    assert math.isnan(got[paths.index(str(tmp_path / "m00510.json"))].z[0, 0])


def _old_add_folder(path):
    """The index add_folder built before the fast path: RKMESpec.load per file, one add_many."""
    idx = SpecIndex()
    items, failed = [], []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        try:
            items.append((name[:-5], RKMESpec.load(full)))
        except ValueError as exc:
            failed.append((full, str(exc)))
    idx.add_many(items)
    return idx, failed


@pytest.mark.parametrize("workers", ["1", "2"])
def test_add_folder_same_index(tmp_path, monkeypatch, workers):
    monkeypatch.setenv("LWE_LOAD_WORKERS", workers)
    monkeypatch.setattr(spec_loading, "_MIN_PARALLEL", 16)
    rng = np.random.default_rng(2)
    _write_market(tmp_path, 2 * spec_loading._MIN_SHARE + 5, rng)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "nan.json").write_text('{"z": [[NaN, 1, 2]], "beta": [1.0], "gamma": 0.1, "num_points": 1}')
    new, report = SpecIndex.from_folder(tmp_path)
    old, failed = _old_add_folder(tmp_path)
    assert report.failed == failed and len(failed) == 1 and "bad.json" in failed[0][0]
    assert new.ids() == old.ids() and report.added == [i for i in old.ids()]
    (gn,), (go,) = new._groups.values(), old._groups.values()
    for name in ("z", "beta", "offsets", "self_ip", "seq", "num_points", "digest"):
        a, b = getattr(gn, name)[: gn.n + (name == "offsets")], getattr(go, name)[: go.n + (name == "offsets")]
        if name in ("z", "beta"):
            a, b = getattr(gn, name)[: gn.rows], getattr(go, name)[: go.rows]
        assert a.tobytes() == b.tobytes(), name
    assert _same_spec(new.get("nan"), old.get("nan"))


def test_parallel_workers_env(monkeypatch):
    monkeypatch.setenv("LWE_LOAD_WORKERS", "3")
    assert spec_loading.parallel_workers() == 3
    monkeypatch.setenv("LWE_LOAD_WORKERS", "x")
    with pytest.raises(ValueError, match="LWE_LOAD_WORKERS"):
        spec_loading.parallel_workers()
    monkeypatch.delenv("LWE_LOAD_WORKERS")
    assert spec_loading.parallel_workers() == 1  # in-process unless asked (workers do not pay: docstring)


def test_package_spec_file_uses_fast_path_same_errors(tmp_path):
    from lwengine.package import PackageError, read_spec_file as pkg_read

    s = RKMESpec(np.arange(6.0).reshape(3, 2) / 7, np.ones(3) / 3, 0.5, 9)
    p = tmp_path / "s.json"
    s.save(p)
    assert _same_spec(pkg_read(p), RKMESpec.load(p))
    p.write_bytes(b'{"z": "\xff"}')
    with pytest.raises(PackageError, match="not UTF-8"):
        pkg_read(p)
    p.write_text(json.dumps({"z": [[1.0]], "beta": [1.0], "gamma": 0.1}))
    with pytest.raises(PackageError, match="missing key"):
        pkg_read(p)


def test_specs_pickle_without_a_second_copy_of_z():
    """Worker processes send specs back pickled: z once (not its 2-D view too), every field kept."""
    import pickle

    from lwengine import RKMESpec
    from lwengine.specs.text import RKMETextSpec

    rng = np.random.default_rng(0)
    table = RKMESpec(rng.normal(size=(300, 20)), np.full(300, 1 / 300), 0.25, 1234)
    text = RKMETextSpec.from_parts(rng.normal(size=(4, 6)), np.full(4, 0.25), 0.1, 9, language=["en", "zh"])
    for spec in (table, text):
        back = pickle.loads(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        assert type(back) is type(spec)
        assert np.array_equal(back.z, spec.z) and np.array_equal(back.beta, spec.beta)
        assert (back.gamma, back.num_points, back.extra()) == (spec.gamma, spec.num_points, spec.extra())
        assert back._z2d.base is back.z or back._z2d.base is back.z.base  # a view again
    assert len(pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL)) < 1.2 * table.z.nbytes


def test_large_store_arrays_are_ordinary_writable_arrays():
    from lwengine.packed import empty, grow

    a = empty((1 << 21, 3), np.float64)  # 48 MB: an anonymous mapping
    assert a.shape == (1 << 21, 3) and a.dtype == np.float64 and a.flags.writeable and a.flags.c_contiguous
    a[:] = 2.0
    b = grow(a[:10], 1 << 22)
    assert b.shape[0] >= 1 << 22 and np.all(b[:10] == 2.0)
    assert empty((5,), np.int64).shape == (5,)


@pytest.mark.parametrize("value", [
    [1.5, 2, -3.25], [[1.0, 2.0], [3, 4]], [[1, 2]], [[1.0, float("nan")], [float("inf"), -0.0]], [2 ** 62, -7],
    [[0.1] * 20] * 100,
])
def test_float_array_matches_numpy_where_it_takes_the_lists(value):
    from lwengine import kernels

    got = kernels.float_array(value)
    want = np.array(value)
    assert got is not None and got.dtype == np.float64 and got.shape == want.shape
    assert got.tobytes() == want.astype(np.float64).tobytes()


@pytest.mark.parametrize("value", [
    [], [[]], [[1.0], [2.0, 3.0]], [[True, 1.0]], [True], [[1.0, "a"]], ["1.5"], [[1.0, None]], [[[1.0]]],
    [1.0, [2.0]], [[1.0], 2.0], 5, "z", {"a": 1}, (1.0, 2.0),
])
def test_float_array_declines_everything_else(value):
    from lwengine import kernels

    assert kernels.float_array(value) is None  # numpy.array (and the spec checks) decide those
