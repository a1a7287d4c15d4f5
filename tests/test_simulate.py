"""scripts/simulate.py on a small farm: the real Scheduler and Store, simulated hosts, virtual time.

50 hosts of mixed speeds render 2,000 chunks of 10 jobs of three priorities; a virtual hour
passes in seconds. The figures at scale are `scripts/bench sim`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from simulate import Result, Scenario, simulate  # noqa: E402


def by_priority(r: Result, values: dict[str, float]) -> list[list[float]]:
    """The values of the jobs, grouped by priority, highest first."""
    groups: dict[int, list[float]] = {}
    for job_id, value in values.items():
        groups.setdefault(r.job_priority[job_id], []).append(value)
    assert len(groups) > 1, groups
    return [groups[p] for p in sorted(groups, reverse=True)]


def test_dying_and_slow_hosts(tmp_path: Path) -> None:
    """One host dies, three are 10x slow: every chunk is verified once, near the ideal makespan."""
    sc = Scenario(hosts=50, chunks=2000, jobs=10, fail_fraction=0.02, slow_fraction=0.06, seed=3)
    r = simulate(sc, tmp_path)

    # Every chunk verified, each exactly once (a speculative copy that loses is not verified).
    assert r.verified == sc.chunks
    assert len(r.verified_per_chunk) == sc.chunks and set(r.verified_per_chunk.values()) == {1}

    # Capacity is scarce (2,000 chunks on about 75 slots): a job's chunks are all claimed before
    # any chunk of a job of lower priority.
    groups = by_priority(r, {j: c[0] for j, c in r.job_claims.items()})
    last = by_priority(r, {j: c[1] for j, c in r.job_claims.items()})
    for n in range(len(groups) - 1):
        assert max(last[n]) <= min(groups[n + 1]), (last, groups)

    # The dead host's chunks went back to the queue and were verified on other hosts.
    assert r.lost >= 1 and r.lost_chunks >= 1
    assert r.rerun_elsewhere == r.lost_chunks

    # A finished chunk wakes its own host, not a round over the farm: the store calls per chunk
    # do not grow with the number of hosts (they were one per host per round).
    assert r.store_calls <= 12 * sc.chunks, r.store_calls / sc.chunks

    # Group commit and fewer store calls per chunk: a claim starts its chunk and carries its job;
    # fetched, verified, the host's speed and the check for assembly share one batch. A chunk's
    # life is then two thread hops and two transactions (claim, verification), where every store
    # call was a hop and every transition a transaction (8.5 and 5 per chunk before).
    assert r.store_calls <= 3 * sc.chunks, r.store_calls / sc.chunks
    assert r.transactions <= 2.5 * sc.chunks, r.transactions / sc.chunks
    assert r.decisions >= 1.6 * r.transactions, (r.decisions, r.transactions)

    # Slow hosts' stragglers got copies (speculation runs on the virtual clock), and the farm
    # finished near the ideal; a static equal split waits for the slow hosts.
    assert r.speculative >= 1
    assert r.makespan <= 1.25 * r.ideal, (r.makespan, r.ideal)
    assert r.static_split > 3 * r.ideal


def test_jobs_finish_in_priority_order(tmp_path: Path) -> None:
    """Without stragglers, every job of a priority finishes before any job of a lower one."""
    sc = Scenario(hosts=30, chunks=900, jobs=9, fail_fraction=0, slow_fraction=0, seed=5)
    r = simulate(sc, tmp_path)
    assert r.verified == sc.chunks
    finish = by_priority(r, r.job_finish)
    for n in range(len(finish) - 1):
        assert max(finish[n]) <= min(finish[n + 1]), finish
    assert r.makespan <= 1.15 * r.ideal, (r.makespan, r.ideal)
