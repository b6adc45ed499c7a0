"""Data-driven gossip transcripts: tests/transcripts/gossip/*.txt, in the same etcd-raft
interaction format as the Raft transcripts (the parser and `--rewrite` come from
test_raft_transcripts.py). `gossip_env.py` documents the commands; the members are the shipped
`GossipCore`. When behaviour changes on purpose, regenerate the expected output and read the diff
before committing it:

    CAIRN_REWRITE=1 uv run pytest tests/transcripts/test_gossip_transcripts.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .gossip_env import GossipEnv
from .test_raft_transcripts import _rewrite, parse, render

HERE = Path(__file__).parent / "gossip"
FILES = sorted(HERE.glob("*.txt"))


def run_file(path: Path) -> tuple[list[tuple[list[str], str, str]], list[str]]:
    """Every block of a transcript run afresh: (blocks with the actual output, mismatches)."""
    env = GossipEnv()
    expected = parse(path.read_text())
    actual = [(preamble, command, env.run(command) if command else output) for preamble, command, output in expected]
    mismatches = [f"--- {command}\nexpected:\n{want}\nactual:\n{got}"
                  for (_, command, want), (_, _, got) in zip(expected, actual, strict=True) if got != want]
    return actual, mismatches


def test_gossip_transcripts_exist():
    assert {p.stem for p in FILES} >= {"join", "failure", "refute", "leave", "push_pull"}, FILES


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_gossip_transcript(path: Path, request):
    actual_blocks, mismatches = run_file(path)
    if _rewrite(request):
        path.write_text(render(actual_blocks))
        return
    assert not mismatches, f"{path.name}: {len(mismatches)} block(s) differ\n" + "\n".join(mismatches[:3])


def test_refute_transcript_catches_a_core_that_never_refutes(monkeypatch):
    # A core that never refutes (an accused member keeps its incarnation) must fail the refute
    # transcript: the accusation would stick and the member be declared dead.
    from appliance.gossip.transitions import MemberTransitions

    monkeypatch.setattr(MemberTransitions, "_refute", lambda self, me, inc: None)
    _, mismatches = run_file(HERE / "refute.txt")
    assert mismatches
