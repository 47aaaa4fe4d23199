"""Crash safety and multi-process concurrency of the dock, with real processes and SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lwengine import SpecIndex
from lwengine.dock import Dock, DockLockedError

pytest.importorskip("yaml")

# Spec i is a pure function of i, so the checker can rebuild what each acknowledged id must hold.
SPEC_CODE = """
import numpy as np
from lwengine import RKMESpec
def spec_of(i):
    rng = np.random.default_rng(1000 + i)
    K = 1 + i % 6
    return RKMESpec(rng.normal(size=(K, 4)), rng.dirichlet(np.ones(K)), 0.1, 10 + i)
"""
ns: dict = {}
exec(SPEC_CODE, ns)
spec_of = ns["spec_of"]

WRITER = SPEC_CODE + """
import io, json, sys, zipfile
from lwengine.dock import Dock
path, start = sys.argv[1], int(sys.argv[2])
d = Dock(path, lock_timeout=30)
YAML = ("stat_specifications:\\n  - class_name: RKMETableSpecification\\n    file_name: rkme.json\\n")
i = start
batch = 0
while True:
    if batch % 3 == 2:   # a package, acknowledged alone
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("learnware.yaml", YAML)
            zf.writestr("rkme.json", spec_of(i).dumps())
        lid = d.add_package(data=buf.getvalue())
        print(f"A {lid} {i}", flush=True)
        i += 1
    else:
        n = 1 + batch % 5
        items = [(spec_of(j), {"Name": {"Type": "String", "Values": f"lw {j}"}}) for j in range(i, i + n)]
        seeds = iter(range(i, i + n))
        d.add_specs(items, batch_size=2, on_commit=lambda ids: [print(f"A {x} {next(seeds)}", flush=True) for x in ids])
        i += n
    if batch % 4 == 3:
        victim = f"{(batch * 7) % max(1, i):08d}"
        print(f"T {victim}", flush=True)  # a kill between the commit and "R" leaves it maybe-removed
        try:
            d.remove(victim)
            print(f"R {victim}", flush=True)
        except KeyError:
            pass
    if batch % 6 == 5:
        d.update(f"{batch % max(1, i):08d}" , status=1) if f"{batch % max(1, i):08d}" in d else None
    if batch % 10 == 9:
        d.checkpoint()
    batch += 1
"""


def test_sigkill_writer_never_loses_acknowledged_work(tmp_path):
    path = tmp_path / "dock"
    Dock.init(path).close()
    rng = np.random.default_rng(0)
    acked: dict = {}      # id -> spec number
    removed: set = set()
    maybe_removed: set = set()  # removal attempted, its acknowledgement not seen
    start = 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    deadline = time.monotonic() + 24
    rounds = 0
    while time.monotonic() < deadline and rounds < 12:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(float(rng.uniform(0.6, 2.0)))  # import time ~0.5 s, then writes
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert "Traceback" not in err, err
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "A":
                acked[parts[1]] = int(parts[2])
                removed.discard(parts[1])
                start = max(start, int(parts[2]) + 1)
            elif len(parts) == 2 and parts[0] == "T":
                maybe_removed.add(parts[1])
            elif len(parts) == 2 and parts[0] == "R":
                removed.add(parts[1])
                maybe_removed.discard(parts[1])
        start += 50  # skip numbers possibly committed but not acknowledged
        rounds += 1
    assert rounds >= 5 and len(acked) > 20

    d = Dock(path)
    assert d.verify() == []
    records, page = [], 0  # every record: a fast writer acknowledges more than one page of 10^4
    while True:
        chunk, total = d.list(limit=10000, page=page)
        records += chunk
        page += 1
        if page * 10000 >= total:
            break
    present = {r.id for r in records}
    assert len(present) == len(records) == total
    for lid, i in acked.items():
        if lid in removed:
            assert lid not in present
            continue
        if lid in maybe_removed and lid not in present:
            continue
        assert lid in present, f"acknowledged {lid} lost"
        assert d.get_spec(lid).to_dict() == spec_of(i).to_dict()
    # index == records (no orphan specs, no records without specs), and search agrees with a fresh build
    user = spec_of(3)
    r = d.search(user, status=None)
    assert set(r.ranking) == present and d.problems == []
    idx = SpecIndex()
    for rec in records:
        idx.add(rec.id, d.get_spec(rec.id))
    assert r.to_dict() == idx.search(user).to_dict()
    for lid in list(acked)[-3:]:
        if lid not in removed and lid not in maybe_removed:
            top = d.search(spec_of(acked[lid]), status=None).single[0]
            assert top.dist == 0.0 and spec_of(acked[lid]).to_dict() == d.get_spec(top.id).to_dict()
    # the next writer drops the garbage of the crashed ones
    d.add_spec(spec_of(10**6))
    refs = {row[0] for row in d._conn().execute("SELECT package FROM learnwares WHERE package IS NOT NULL")}
    assert set(os.listdir(os.path.join(path, "packages"))) == refs
    seg_dir = os.path.join(path, "segments")
    last = sorted(os.listdir(seg_dir))[-1]
    end = d._conn().execute("SELECT MAX(off + len) FROM learnwares WHERE seg=?", (int(last[4:10]),)).fetchone()[0]
    assert os.path.getsize(os.path.join(seg_dir, last)) == end
    assert not [n for n in os.listdir(path) if n.endswith(".tmp")]


READER = SPEC_CODE + """
import sys, time
from lwengine.dock import Dock
path, batch, first = sys.argv[1], int(sys.argv[2]), sys.argv[3]
d = Dock(path)
user = spec_of(0)
seen, last = 0, -1
t_end = time.monotonic() + float(sys.argv[4])
while time.monotonic() < t_end:
    r = d.search(user, max_search_num=2, method=None)
    n = len(r.ranking)
    assert n % batch == 0, f"half-added batch visible: {n} learnwares"
    assert n >= last, "went back in time"
    ids = set(r.ranking)
    assert first in ids and r.single[0].id == first and r.single[0].dist == 0.0
    last = n
    seen += 1
print("OK", seen, last)
"""


def test_readers_see_whole_batches_while_one_writer_adds(tmp_path):
    path = tmp_path / "dock"
    d = Dock.init(path)
    batch = 5
    first = d.add_specs([(spec_of(i), None) for i in range(batch)])[0]
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(path), str(batch), first, "6"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)
    total = batch
    t_end = time.monotonic() + 4
    while time.monotonic() < t_end:
        d.add_specs([(spec_of(i), None) for i in range(total, total + batch)], batch_size=batch)
        total += batch
    for p in readers:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.startswith("OK")
        assert int(out.split()[1]) > 3  # it really searched while we wrote
    assert len(d) == total


HOLDER = """
import sys, time
from lwengine.dock import Dock
d = Dock(sys.argv[1])
with d._writing():
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_second_writer_waits_or_gets_a_clear_error(tmp_path):
    path = tmp_path / "dock"
    Dock.init(path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "2.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    impatient = Dock(path, lock_timeout=0.2)
    with pytest.raises(DockLockedError, match="another process is writing"):
        impatient.add_spec(spec_of(1))
    assert impatient.search(spec_of(2)).single == []  # readers never wait for the lock
    patient = Dock(path, lock_timeout=30)
    t = time.monotonic()
    lid = patient.add_spec(spec_of(1))
    assert time.monotonic() - t > 0.5 and lid in patient
    holder.wait(timeout=30)
