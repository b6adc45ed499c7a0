"""Data-driven Raft transcripts: tests/transcripts/raft/*.txt, in the etcd-raft interaction style.

Each file is a list of blocks:

    # comments, kept as they are
    command args...
    ----
    expected output (no blank lines; "ok" when a command prints nothing)

and a blank line between blocks. `raft_env.py` documents the commands. When behaviour changes on
purpose, regenerate the expected output and read the diff before committing it:

    CAIRN_REWRITE=1 uv run pytest tests/transcripts          (or: pytest --rewrite, when the
                                                              option is registered by a conftest)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .raft_env import RaftEnv

HERE = Path(__file__).parent / "raft"
FILES = sorted(HERE.glob("*.txt"))


def parse(text: str) -> list[tuple[list[str], str, str]]:
    """Blocks of (preamble lines, command, expected output)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    preamble: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            preamble.append(line)
            i += 1
            continue
        command = line
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"line {i + 1}: expected '----' after {command!r}")
        i += 1
        out = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        if i < len(lines):
            i += 1  # the blank line that ends the block
        blocks.append((preamble, command, "\n".join(out)))
        preamble = []
    if preamble:
        blocks.append((preamble, "", ""))
    return blocks


def render(blocks: list[tuple[list[str], str, str]]) -> str:
    parts = []
    for preamble, command, output in blocks:
        parts.extend(preamble)
        if command:
            parts.extend([command, "----", output, ""] if output else [command, "----", ""])
    text = "\n".join(parts)
    while "\n\n\n" in text:  # one blank line between blocks
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n"


def _rewrite(request) -> bool:
    try:
        if request.config.getoption("--rewrite"):
            return True
    except ValueError:
        pass
    return os.environ.get("CAIRN_REWRITE", "") not in ("", "0")


def test_transcripts_exist():
    assert len(FILES) >= 8, FILES


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_transcript(path: Path, request):
    blocks = parse(path.read_text())
    env = RaftEnv()
    actual_blocks = []
    mismatches = []
    for preamble, command, expected in blocks:
        if not command:
            actual_blocks.append((preamble, command, expected))
            continue
        actual = env.run(command)
        actual_blocks.append((preamble, command, actual))
        if actual != expected:
            mismatches.append(f"--- {command}\nexpected:\n{expected}\nactual:\n{actual}")
    if _rewrite(request):
        path.write_text(render(actual_blocks))
        return
    assert not mismatches, f"{path.name}: {len(mismatches)} block(s) differ\n" + "\n".join(mismatches[:3])


def test_parse_render_round_trip():
    text = "# c\n\ncmd a\n----\nline 1\nline 2\n\nother\n----\nok\n"
    assert render(parse(text)) == text


def test_figure8_transcript_catches_commit_by_counting(monkeypatch):
    # Raft §5.4.2: a leader that commits an earlier term's entry by counting replicas must make
    # the Figure 8 transcript fail.
    from appliance.raft import quorum
    from appliance.raft.replication import ReplicationRules

    def commit_by_counting(self):
        index = quorum.committed_index(self.voters(), self._acked)
        if index <= self.log.committed:
            return False
        self.log.commit_to(index)
        self._broadcast_append()
        return True

    monkeypatch.setattr(ReplicationRules, "_maybe_commit", commit_by_counting)
    env = RaftEnv()
    outputs = [(command, expected, env.run(command))
               for _, command, expected in parse((HERE / "figure8.txt").read_text()) if command]
    assert any(expected != actual for _, expected, actual in outputs)
    status = next(actual for command, _, actual in outputs if command == "status 1")
    assert "commit=3" in status  # the old-term entry 3/2 was committed by counting
