"""A hospital killed with SIGKILL while encrypting or decrypting leaves no secret on disk.

Scratch files once carried a hospital's update and key share through ``/dev/shm`` and survived
a kill. A child process here sets up a 3-hospital federation (3-of-3) and then encrypts and
partially decrypts in a loop, announcing each step on its stdout pipe (never on disk), with the
first bytes of every secret it holds. It is killed with SIGKILL in the middle of the step; then
every file in its working directory, its HOME, its TMPDIR and ``/dev/shm`` is checked: only the
roster and the signing keys the test wrote are there, and no file holds any secret's bytes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = r"""
import sys
import numpy as np
from check_polynomials import answer
from client.keyholder import KeyHolder
from common.simulated_federation import simulated_hospital_name, write_simulated_federation
from he.transcript import model_release

directory = sys.argv[1]
roster = write_simulated_federation(directory, 3, threshold=3, min_contributors=2, preset="compact")
names = [simulated_hospital_name(i) for i in range(3)]
holders = {p: KeyHolder(roster, names[p - 1], 1, f"{directory}/{names[p - 1]}.key") for p in (1, 2, 3)}
hellos = {p: h.hello() for p, h in holders.items()}
dealings = {p: h.deal(hellos) for p, h in holders.items()}
statements = {d: s for d, (_, s, _) in dealings.items()}
for k, h in holders.items():
    h.receive_dealings({d: blobs[k] for d, (blobs, _, _) in dealings.items() if k in blobs}, statements)
for h in holders.values():
    for secret in h.secrets.values():
        print("secret", secret[:24].hex(), flush=True)
rng = np.random.default_rng(0)
for round_id in range(1, 1000):
    print("encrypting", flush=True)
    update = [rng.uniform(-1, 1, 50_000)]
    release = model_release(update)
    signed = {p: h.encrypt("train", round_id, update, 100, release=release)[1] for p, h in holders.items()}
    print("decrypting", flush=True)
    for h in holders.values():
        answer(h, "train", round_id, 1, [1, 2, 3], signed)
"""


def files_under(*roots: Path) -> set[Path]:
    return {path for root in roots if root.exists() for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize("step", ["encrypting", "decrypting"])
def test_sigkill_in_the_middle_of_a_step_leaves_no_secret_on_disk(tmp_path, step):
    work, home, scratch, federation = (tmp_path / d for d in ("work", "home", "tmp", "federation"))
    for folder in (work, home, scratch, federation):
        folder.mkdir()
    shm = Path("/dev/shm")
    shm_before = files_under(shm)
    path = os.pathsep.join([str(Path.cwd()), str(Path(__file__).resolve().parents[1])])  # + tests/
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(scratch), "PYTHONPATH": path}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(federation)], cwd=work, env=env, stdout=subprocess.PIPE, text=True
    )
    secrets, seen = [], 0
    try:
        for line in child.stdout:
            word, *rest = line.split()
            if word == "secret":
                secrets.append(bytes.fromhex(rest[0]))
            elif word == step:
                seen += 1
                if seen == 2:  # well inside a step of the second round
                    time.sleep(0.05)
                    break
        assert child.poll() is None, "the child ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert len(secrets) >= 9  # per hospital: the channel key, its hello's secret half, its key share

    left = files_under(work, home, scratch, federation)
    roster_and_keys = {federation / "roster.json"} | {federation / f"hospital-{i}.key" for i in (1, 2, 3)}
    assert left == roster_and_keys
    # /dev/shm is shared with whatever else runs (Ray's object store): new files there must not
    # be ours and must not hold a secret
    shared = [path for path in files_under(shm) - shm_before if path.stat().st_size < 2**26]
    assert not [path for path in shared if path.name.startswith("fedquorum")]
    for path in [*left, *shared]:
        data = path.read_bytes()
        assert not any(secret in data or secret.hex().encode() in data for secret in secrets), path
