"""Pure pieces of the Raft core: quorum arithmetic, progress, the log, the configuration."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, strategies as st

from appliance.raft import quorum
from appliance.raft.config import RaftConfig
from appliance.raft.core import RaftCore
from appliance.raft.log import RaftLog
from appliance.raft.messages import (
    ConfChange,
    ConfChangeType,
    Configuration,
    Entry,
    HardState,
    InitialState,
    InvariantViolation,
    decode_configuration,
    encode_configuration,
)
from appliance.raft.progress import Progress, ProgressState


@given(st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 50), min_size=1))
def test_committed_index_is_the_largest_index_a_majority_holds(acked):
    # Raft §5.3: an index is replicated once a majority of voters holds it. Naive reference.
    voters = sorted(acked)
    got = quorum.committed_index(voters, acked.__getitem__)
    naive = max(i for i in range(51) if sum(1 for v in voters if acked[v] >= i) >= len(voters) // 2 + 1)
    assert got == naive


@given(st.dictionaries(st.sampled_from("abcde"), st.booleans(), max_size=5), st.integers(1, 5))
def test_vote_result_matches_counting(votes, n):
    voters = list("abcde"[:n])
    votes = {k: v for k, v in votes.items() if k in voters}
    granted = sum(votes.values())
    rejected = len(votes) - granted
    result = quorum.vote_result(voters, votes)
    if granted >= n // 2 + 1:
        assert result == quorum.VoteResult.WON
    elif rejected >= n - n // 2:
        assert result == quorum.VoteResult.LOST
    else:
        assert result == quorum.VoteResult.PENDING


def test_progress_ignores_stale_answers():
    pr = Progress(next_index=11, max_inflight=2)
    pr.match = 5
    assert not pr.maybe_decrease_to(rejected=7, match_hint=3)  # probe: not the index being probed
    assert pr.maybe_decrease_to(rejected=10, match_hint=3)
    assert pr.next == 6  # never below match + 1
    pr.become_replicate()
    assert not pr.maybe_update(4)  # match only grows
    assert pr.maybe_update(8) and pr.match == 8
    pr.sent_entries(9, 1)
    pr.sent_entries(10, 1)
    assert pr.paused() and pr.state == ProgressState.REPLICATE
    assert not pr.maybe_decrease_to(rejected=8, match_hint=0)  # at or below match: stale


def test_progress_probes_back_past_a_match_the_follower_lost():
    # a follower restarted with an empty data dir rejects the probe at its old match: without
    # going below match the leader would probe there forever
    pr = Progress(next_index=11, max_inflight=2)
    pr.match = 10
    assert pr.maybe_decrease_to(rejected=10, match_hint=1)
    assert (pr.match, pr.next) == (1, 2)
    pr.match, pr.next = 10, 12
    assert not pr.maybe_decrease_to(rejected=10, match_hint=1)  # not the probe in flight: stale
    assert pr.match == 10


def _log(*terms: int) -> RaftLog:
    return RaftLog(InitialState(HardState(terms[-1] if terms else 0), None,
                                tuple(Entry(i + 1, t) for i, t in enumerate(terms))))


def test_append_never_truncates_a_matching_suffix():
    # Raft §5.3 / Figure 2: a delayed AppendEntries carrying a prefix must not cut later entries.
    log = _log(1, 1, 2, 2)
    assert log.maybe_append(1, 1, 0, (Entry(2, 1), Entry(3, 2))) == 3
    assert log.last_index() == 4


def test_follower_commits_only_what_the_rpc_verified():
    # Figure 2 rule 5: min(leaderCommit, index of last new entry), not the follower's last index.
    log = _log(1, 1, 3, 3)  # 3/3 and 4/3 may be a stale tail
    assert log.maybe_append(2, 1, 10, ()) == 2
    assert log.committed == 2


def test_truncating_a_committed_entry_fails_loudly():
    log = _log(1, 1, 1)
    log.commit_to(3)
    with pytest.raises(InvariantViolation):
        log.maybe_append(1, 1, 3, (Entry(2, 2),))


def test_find_conflict_by_term_skips_a_whole_term():
    log = _log(1, 1, 4, 4, 4, 4)
    assert log.find_conflict_by_term(6, 2) == 2


def test_configuration_round_trip_and_changes():
    conf = Configuration.of("a", "b", nonvoters=("c",))
    assert decode_configuration(encode_configuration(conf)) == conf
    assert ConfChange(ConfChangeType.ADD_VOTER, "c").apply_to(conf).voters == ("a", "b", "c")
    assert ConfChange(ConfChangeType.REMOVE_SERVER, "a").apply_to(conf).ids == ("b", "c")
    with pytest.raises(ValueError):
        ConfChange(ConfChangeType.ADD_NONVOTER, "a").apply_to(conf)


def test_raft_multiplier_scales_the_tick_not_the_tick_counts():
    one, five = RaftConfig(raft_multiplier=1), RaftConfig(raft_multiplier=5)
    assert one.core() == five.core()
    assert (one.tick_ms, five.tick_ms) == (100, 500)
    assert one.core().election_ticks == 10 and one.core().leader_lease_ticks == 5
    assert all(RaftConfig.describe().values())
    with pytest.raises(ValueError):
        RaftConfig(raft_multiplier=11)


def test_single_voter_applies_only_durable_entries():
    # etcd #14370: a one-voter cluster must not apply an entry before its own fsync.
    from appliance.raft.messages import bootstrap_state

    core = RaftCore("a", RaftConfig().core(), random.Random(1), bootstrap_state(Configuration.of("a")))
    core.campaign()
    assert core.is_leader
    rd = core.ready()
    assert rd.entries and not rd.committed_entries
    core.advance(rd)  # entries now durable: the leader counts itself
    rd = core.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2]


def _vote_answer(core: RaftCore, candidate: str, last_index: int, last_term: int) -> bool:
    """Pre-vote `core` from `candidate` with that last entry; True if granted."""
    from appliance.raft.messages import Message, MsgType

    core.step(Message(MsgType.PRE_VOTE, candidate, core.id, core.term + 1, index=last_index,
                      log_term=last_term))
    rd = core.ready()
    core.advance(rd)
    (answer,) = [m for m in (*rd.messages, *rd.messages_after_persist) if m.to == candidate]
    return not answer.reject


def test_a_lagging_server_votes_for_a_more_up_to_date_candidate_it_does_not_know():
    # Sim seed 109573: a server that missed the entry adding d (its configuration is still a, b, c)
    # refused d's vote request, and d, the most up-to-date voter of the newer configuration,
    # could never win. A longer log may hold a configuration this server has not seen: grant.
    from appliance.raft.messages import bootstrap_state

    lagging = RaftCore("a", RaftConfig().core(), random.Random(1), bootstrap_state(Configuration.of("a", "b", "c")))
    assert _vote_answer(lagging, "d", 20, 3)
    # With a log no longer than ours the candidate has our configuration, where it is no voter:
    # a removed server gets no vote.
    assert not _vote_answer(lagging, "d", 1, 1)
    assert _vote_answer(lagging, "b", 1, 1)
