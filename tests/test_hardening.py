"""Hostile and careless inputs (issue 13): a table of inputs and the error each must give.

Every case must end as a clear ValueError / TypeError naming the file or argument -- never a crash,
a hang, a RecursionError / OverflowError / MemoryError, or a silently wrong answer.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex
from lwengine.ids import check_id
from lwengine.limits import GammaPolicy, SpecLimits, check_spec_cost
from lwengine.package import PackageError, read_package, read_semantic, read_spec_file
from lwengine.safe_io import short_repr

YAML = "stat_specifications:\n  - class_name: RKMETableSpecification\n    file_name: rkme.json\n"


def spec(seed=0, K=4, d=3, gamma=0.1):
    rng = np.random.default_rng(seed)
    return RKMESpec(rng.normal(size=(K, d)), rng.dirichlet(np.ones(K)), gamma, 50)


def make_zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def saved_index(tmp_path, n=12):
    idx = SpecIndex()
    for i in range(n):
        idx.add(f"s{i}", spec(i))
    p = tmp_path / "ok.lwe"
    idx.save(p)
    return p


def patch_header(path, out, fn):
    """Rewrite the JSON header of an index file with ``fn(header)`` (same length, padded)."""
    b = path.read_bytes()
    n = int(np.frombuffer(b[8:16], dtype=np.uint64)[0])
    h = json.loads(b[16:16 + n])
    fn(h)
    blob = json.dumps(h).encode()
    assert len(blob) <= n
    out.write_bytes(b[:16] + blob + b" " * (n - len(blob)) + b[16 + n:])
    return out


def array_pos(path, group, name):
    b = path.read_bytes()
    n = int(np.frombuffer(b[8:16], dtype=np.uint64)[0])
    h = json.loads(b[16:16 + n])
    k = h["groups"][group]["arrays"][name][0]
    return 16 + n + h["array_offsets"][k]


def flip(path, out, pos, bit=0):
    b = bytearray(path.read_bytes())
    b[pos] ^= 1 << bit
    out.write_bytes(bytes(b))
    return out


def deep(n=100_000):
    return "[" * n + "]" * n


def alias_bomb(levels=9):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"stat_specifications: [{{class_name: *a{levels - 1}, file_name: *a{levels - 1}}}]")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the table
def _index_case(make):
    def run(tmp_path):
        return SpecIndex.load(make(tmp_path, saved_index(tmp_path)))
    return run


def _h(fn):
    return lambda tmp, ok: patch_header(ok, tmp / "evil.lwe", fn)


def _set_array(name, pos, value, group=0):
    def fn(h):
        h["groups"][group]["arrays"][name][pos] = value
    return _h(fn)


def _write(name, data):
    def run(tmp_path):
        p = tmp_path / name
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
        return p
    return run


CASES = [
    # (1) crafted index files: dtypes, shapes and offsets checked before anything is mapped
    ("index: object dtype for beta", _index_case(_set_array("beta", 1, "|O")), ValueError, "dtype '|O'"),
    ("index: object dtype for z", _index_case(_set_array("z", 1, "|O")), ValueError, "dtype '|O'"),
    ("index: structured dtype", _index_case(_set_array("offsets", 1, "|V8")), ValueError, "dtype"),
    ("index: z shape larger than the group", _index_case(_set_array("z", 2, [10 ** 6, 3])), ValueError, "shape"),
    ("index: negative shape", _index_case(_set_array("beta", 2, [-1])), ValueError, "shape"),
    ("index: array index out of range", _index_case(_set_array("beta", 0, 999)), ValueError, "out of range"),
    ("index: array offset past the file", _index_case(_h(lambda h: h["array_offsets"].__setitem__(1, 1 << 40))),
     ValueError, "truncated"),
    ("index: huge next_seq", _index_case(_h(lambda h: h.__setitem__("next_seq", 2 ** 64))), ValueError, "next_seq"),
    ("index: ids do not match n", _index_case(_h(lambda h: h["groups"][0].__setitem__("ids", ["x"]))),
     ValueError, "ids"),
    ("index: unknown storage dtype", _index_case(_h(lambda h: h.__setitem__("dtype", "object"))), ValueError,
     "storage dtype"),
    ("index: header length beyond the file",
     _index_case(lambda tmp, ok: tmp.joinpath("e.lwe").write_bytes(ok.read_bytes()[:8] + b"\xff" * 8) and
                 tmp / "e.lwe"), ValueError, "header length"),
    # (8) integrity: one flipped bit in z, in the offsets, or in the header
    ("index: bit flip in z", _index_case(lambda tmp, ok: flip(ok, tmp / "f.lwe", array_pos(ok, 0, "z") + 13, 3)),
     ValueError, "checksum"),
    ("index: bit flip in offsets",
     _index_case(lambda tmp, ok: flip(ok, tmp / "f.lwe", array_pos(ok, 0, "offsets") + 8, 1)), ValueError, ""),
    ("index: bit flip in the header gamma",
     _index_case(lambda tmp, ok: flip(ok, tmp / "f.lwe", ok.read_bytes().index(b'"gamma": 0.1') + 11, 1)),
     ValueError, "checksum"),
    # (6) deep JSON, non-UTF-8 and (7) num_points overflow in spec files
    ("spec: 100k nested brackets", lambda tmp: RKMESpec.load(_write("deep.json", deep())(tmp)), ValueError,
     "deep.json: JSON nested too deeply"),
    ("spec: not UTF-8", lambda tmp: RKMESpec.load(_write("bin.json", b"\xff\xfe{}")(tmp)), ValueError,
     "bin.json: not UTF-8"),
    ("spec file (dock reader): deep JSON", lambda tmp: read_spec_file(_write("deep.json", deep())(tmp)),
     PackageError, "nested too deeply"),
    ("semantic: deep JSON", lambda tmp: read_semantic(_write("sem.json", deep())(tmp)), PackageError,
     "nested too deeply"),
    ("spec: num_points = 2**63", lambda tmp: RKMESpec(np.ones((2, 2)), np.ones(2), 0.1, 2 ** 63), ValueError,
     "num_points must be < 2**63"),
    ("spec JSON: num_points = 2**64", lambda tmp: RKMESpec.loads(json.dumps(
        {"z": [[0.0]], "beta": [1.0], "gamma": 0.1, "num_points": 2 ** 64}), "u.json"), ValueError, "num_points"),
    # also-fix: finite z that overflows squared distances; fit messages that name the argument
    ("spec: finite z of 1e200", lambda tmp: RKMESpec(np.full((2, 2), 1e200), np.ones(2), 0.1), ValueError,
     "magnitude"),
    ("fit: NaN init_z", lambda tmp: RKMESpec.fit(np.random.default_rng(0).normal(size=(50, 2)), K=3,
                                                 init_z=np.full((3, 2), np.nan)), ValueError, "init_z"),
    ("fit: huge step_size", lambda tmp: RKMESpec.fit(np.random.default_rng(0).normal(size=(60, 2)), K=5, seed=0,
                                                     step_size=1e300, steps=2), ValueError, "step_size"),
    # (4) YAML alias bomb: refused before expansion, short message
    ("package: YAML alias bomb", lambda tmp: read_package(None, data=make_zip(
        {"learnware.yaml": alias_bomb(), "rkme.json": spec().dumps()})), PackageError, "YAML aliases"),
    ("package: deep semantic JSON", lambda tmp: read_package(None, data=make_zip(
        {"learnware.yaml": YAML, "rkme.json": spec().dumps(), "semantic_specification.json": deep()})),
     PackageError, "nested too deeply"),
    ("package: deep spec JSON", lambda tmp: read_package(None, data=make_zip(
        {"learnware.yaml": YAML, "rkme.json": deep()})), PackageError, "nested too deeply"),
    # (10) non-regular files
    ("package: /dev/zero", lambda tmp: read_package("/dev/zero"), PackageError, "not a regular file"),
    ("spec file: /dev/zero", lambda tmp: read_spec_file("/dev/zero"), PackageError, "not a regular file"),
    ("package: a FIFO", lambda tmp: (os.mkfifo(tmp / "f.zip"), read_package(tmp / "f.zip")), PackageError,
     "not a regular file"),
    ("spec: a FIFO", lambda tmp: (os.mkfifo(tmp / "f.json"), RKMESpec.load(tmp / "f.json")), ValueError,
     "not a regular file"),
    ("index: a FIFO", lambda tmp: (os.mkfifo(tmp / "f.lwe"), SpecIndex.load(tmp / "f.lwe")), ValueError,
     "not a regular file"),
    # (11) ids
    ("id: 64 four-byte characters", lambda tmp: check_id("\U0001F600" * 64), ValueError, "UTF-8 bytes"),
    ("id: CR LF", lambda tmp: check_id("a\r\nb"), ValueError, "forbidden character"),
    ("id: double quote", lambda tmp: check_id('a"b'), ValueError, "forbidden character"),
    ("id: single quote", lambda tmp: check_id("a'b"), ValueError, "forbidden character"),
    ("id: whitespace only", lambda tmp: check_id("   "), ValueError, "blank"),
    ("id: tab inside", lambda tmp: check_id("a\tb"), ValueError, "forbidden"),
    ("id: slash", lambda tmp: check_id("a/b"), ValueError, "forbidden"),
    ("id: NUL", lambda tmp: check_id("a\x00b"), ValueError, "forbidden"),
    ("id: dot-dot", lambda tmp: check_id(".."), ValueError, "blank"),
    ("id: not a string", lambda tmp: check_id(7), TypeError, "must be a string"),
    # (3) caps and (5) the gamma policy
    ("caps: K over max_K", lambda tmp: check_spec_cost(spec(K=3000, d=1), SpecLimits(), "user spec"), ValueError,
     "max_K"),
    ("caps: K·d over max_Kd", lambda tmp: check_spec_cost(spec(K=1000, d=2000), SpecLimits(), "u"), ValueError,
     "max_Kd"),
    ("gamma policy: 1e-12", lambda tmp: GammaPolicy().check(1e-12, "spec x"), ValueError, "gamma = 1e-12"),
    ("gamma policy: bad list", lambda tmp: GammaPolicy.parse("0.1,abc"), ValueError, "--allowed-gamma"),
]


@pytest.mark.parametrize("make,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_table(tmp_path, make, exc, match):
    with pytest.raises(exc) as info:
        make(tmp_path)
    msg = str(info.value)
    assert match in msg
    assert len(msg) < 2000  # never an untrusted value formatted at length


def test_valid_inputs_still_pass(tmp_path):
    for good in ("00000001", "credit model v2", "模型-1", "a.b_c"):
        assert check_id(good) == good
    idx = SpecIndex.load(saved_index(tmp_path))
    assert len(idx) == 12 and idx.get("s3").to_dict() == spec(3).to_dict()
    check_spec_cost(spec(K=2048, d=640), SpecLimits())
    GammaPolicy().check(0.1)
    GammaPolicy(None).check(1e-12)
    s = RKMESpec(np.full((2, 2), 1e149), np.ones(2), 0.1, 2 ** 63 - 1)
    assert s.num_points == 2 ** 63 - 1


def test_random_bit_flips_never_change_results_silently(tmp_path):
    """(8) 200 random single-bit flips over an index file: each either leaves the results unchanged
    (padding) or is refused with a ValueError."""
    rng = np.random.default_rng(5)
    p = saved_index(tmp_path, n=20)
    user = spec(99, K=5)
    ref = json.dumps(SpecIndex.load(p).search(user).to_dict())
    b = p.read_bytes()
    silent = refused = 0
    for _ in range(200):
        pos = int(rng.integers(0, len(b)))
        out = flip(p, tmp_path / "f.lwe", pos, int(rng.integers(0, 8)))
        try:
            got = json.dumps(SpecIndex.load(out).search(user).to_dict())
        except ValueError:
            refused += 1
            continue
        silent += got != ref
    assert silent == 0 and refused > 100


def test_legacy_index_without_checksums_still_loads(tmp_path):
    def drop(h):
        h.pop("header_crc32")
        for g in h["groups"]:
            g.pop("crc32")
    p = patch_header(saved_index(tmp_path), tmp_path / "old.lwe", drop)
    assert len(SpecIndex.load(p)) == 12


def test_short_repr_bounds_huge_values():
    x = [[["lol"] * 9] * 9] * 9
    assert len(short_repr(x)) < 200 and len(short_repr("a" * 10 ** 6)) < 200


def test_alias_bomb_message_is_short_and_fast():
    import time

    t = time.perf_counter()
    with pytest.raises(PackageError) as info:
        read_package(None, data=make_zip({"learnware.yaml": alias_bomb(12), "rkme.json": spec().dumps()}))
    assert time.perf_counter() - t < 5 and len(str(info.value)) < 500


def test_few_aliases_do_not_expand_into_messages():
    """Under the alias cap, a bad entry built from aliases is still reported briefly."""
    y = 'a: &a ["' + "x" * 1000 + '"]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n' \
        "stat_specifications: [{class_name: *b, file_name: *b}]\n"
    with pytest.raises(PackageError) as info:
        read_package(None, data=make_zip({"learnware.yaml": y, "rkme.json": spec().dumps()}))
    assert len(str(info.value)) < 1000


# ----------------------------------------------------------------------------- (9) concurrent save
def test_concurrent_saves_to_one_path(tmp_path):
    a, b = SpecIndex(), SpecIndex()
    for i in range(30):
        a.add(f"a{i}", spec(i, K=20))
        b.add(f"b{i}", spec(100 + i, K=7, d=3))
    out = tmp_path / "idx.lwe"
    errors = []

    def save(idx):
        try:
            for _ in range(10):
                idx.save(out)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    ts = [threading.Thread(target=save, args=(x,)) for x in (a, b, a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert errors == []
    got = SpecIndex.load(out)
    assert got.ids() in (a.ids(), b.ids())
    src = a if got.ids() == a.ids() else b
    assert all(got.get(i).to_dict() == src.get(i).to_dict() for i in src.ids())
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_failed_save_leaves_no_temporary(tmp_path, monkeypatch):
    import lwengine.safe_io as sio

    idx = SpecIndex()
    idx.add("a", spec())
    d = tmp_path / "out"
    d.mkdir()

    def failing_replace(*args):
        raise OSError("rename failed")
    monkeypatch.setattr(sio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        idx.save(d / "idx.lwe")
    assert os.listdir(d) == []


# ----------------------------------------------------------------------------- (12) CLI errors
def lwe(*args, stdin=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "lwengine", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, input=stdin)


def test_cli_damaged_index_is_an_error_not_a_crash(tmp_path):
    ok = saved_index(tmp_path)
    user = tmp_path / "u.json"
    spec(1).save(user)
    for name, evil in (("object dtype", patch_header(ok, tmp_path / "o.lwe", lambda h: h["groups"][0]["arrays"]
                                                     ["beta"].__setitem__(1, "|O"))),
                       ("flipped bit", flip(ok, tmp_path / "f.lwe", array_pos(ok, 0, "z") + 5)),
                       ("truncated", tmp_path.joinpath("t.lwe").write_bytes(ok.read_bytes()[:200]) and
                        tmp_path / "t.lwe")):
        r = lwe("search", "--specs", evil, "--user", user)
        assert r.returncode == 2 and r.stderr.startswith("lwengine: error: "), (name, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and str(evil) in r.stderr


def test_cli_unwritable_output_is_an_error(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    spec(0).save(folder / "a.json")
    for out in (tmp_path / "missing" / "dir" / "x.lwe", folder):  # FileNotFoundError, IsADirectoryError
        r = lwe("index", "build", folder, "--out", out)
        assert r.returncode == 2 and r.stderr.startswith("lwengine: error: ") and "Traceback" not in r.stderr, r.stderr
    assert sorted(os.listdir(folder)) == ["a.json"] and sorted(os.listdir(tmp_path)) == ["specs"]


def test_cli_search_skips_a_deep_json_file(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    spec(0).save(folder / "a.json")
    (folder / "b.json").write_text(deep())
    spec(2).save(folder / "c.json")
    user = tmp_path / "u.json"
    spec(0).save(user)
    r = lwe("search", "--specs", folder, "--user", user)
    assert r.returncode == 0, r.stderr
    assert "b.json" in r.stderr and "nested too deeply" in r.stderr
    assert "from 2 specs" in r.stdout


def test_cli_search_refuses_a_huge_user_spec_before_computing(tmp_path):
    import time

    folder = tmp_path / "specs"
    folder.mkdir()
    spec(0).save(folder / "a.json")
    user = tmp_path / "big.json"
    RKMESpec(np.zeros((100_000, 1)), np.full(100_000, 1e-5), 0.1).save(user)
    t = time.perf_counter()
    r = lwe("search", "--specs", folder, "--user", user)
    assert r.returncode == 2 and "max_K" in r.stderr and str(user) in r.stderr
    assert time.perf_counter() - t < 30


def test_cli_output_into_a_closed_pipe_is_quiet(tmp_path):
    from lwengine.dock import Dock

    d = Dock.init(tmp_path / "d")
    d.add_specs([(spec(i % 7, K=2), None) for i in range(3000)])
    d.close()
    # ~200 KB of listing into `head`: more than a pipe buffer, so the writer meets a closed pipe
    p = subprocess.run(f"{sys.executable} -m lwengine dock list {tmp_path / 'd'} --limit 10000 | head -n 2; "
                       "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True, text=True,
                       timeout=120)
    assert p.stdout.count("\n") == 2
    assert p.stderr == "", p.stderr
    assert p.returncode == 141  # 128 + SIGPIPE, like any tool whose reader went away


def test_search_specs_folder_applies_the_caps(tmp_path):
    """(3) `lwengine search --specs DIR`: an oversized spec file is skipped before it is parsed, a spec
    over the K cap before any kernel runs; the other files are still searched."""
    import time

    folder = tmp_path / "specs"
    folder.mkdir()
    spec(0).save(folder / "a.json")
    RKMESpec(np.zeros((100_000, 1)), np.full(100_000, 1e-5), 0.1).save(folder / "big.json")
    idx = SpecIndex()
    rep = idx.add_folder(folder, spec_limits=SpecLimits(max_spec_bytes=100_000))
    assert rep.added == ["a"] and "over the limit 100000" in rep.failed[0][1]
    user = tmp_path / "u.json"
    spec(0).save(user)
    t = time.perf_counter()
    r = lwe("search", "--specs", folder, "--user", user)
    assert r.returncode == 0 and "big.json" in r.stderr and "max_K" in r.stderr and "from 1 specs" in r.stdout
    assert time.perf_counter() - t < 60


def test_read_regular_reads_whole_files_and_keeps_the_cap(tmp_path):
    from lwengine.safe_io import read_regular

    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    assert read_regular(empty) == b""
    big = tmp_path / "big.bin"
    payload = os.urandom(200_003)  # several reads of the descriptor
    big.write_bytes(payload)
    assert read_regular(big) == payload
    assert read_regular(big, cap=len(payload)) == payload
    with pytest.raises(ValueError, match="over the limit"):
        read_regular(big, cap=len(payload) - 1)
    if os.path.exists("/proc/self/status"):  # regular files whose size fstat reports as 0
        assert b"Name:" in read_regular("/proc/self/status")
        with pytest.raises(ValueError, match="over the limit 8 bytes"):
            read_regular("/proc/self/status", cap=8)
    with pytest.raises(ValueError, match="not a regular file"):
        read_regular(tmp_path)


def test_add_folder_skips_entries_it_cannot_examine(tmp_path):
    """A symlink loop named like a spec file or a package folder is passed over, as
    os.path.isfile / isdir pass it over; the readable files are still added."""
    folder = tmp_path / "specs"
    folder.mkdir()
    spec(0).save(folder / "a.json")
    os.symlink("loop2.json", folder / "loop1.json")
    os.symlink("loop1.json", folder / "loop2.json")
    os.symlink("pkg_b", folder / "pkg_a")
    os.symlink("pkg_a", folder / "pkg_b")
    rep = SpecIndex().add_folder(folder)
    assert rep.added == ["a"] and rep.failed == []
