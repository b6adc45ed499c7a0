"""What every decoder fuzzer shares: targets, input generators, the outcome check and the deadline.

A `Target` is one decoder of untrusted bytes: `decode(data)` runs it, `declared` lists the error
types it may raise (its contract, as its module or its callers state it), `seeds` are valid
encodings. Four kinds of input are generated, by the hypothesis tests (tests/fuzz/test_*.py) and by
the long run (bench/fuzz/run.py) alike:

* random bytes;
* byte mutations of a valid encoding: bit flips, cuts, inserted or overwritten bytes, interesting
  integers, duplicated or dropped chunks, splices with another seed;
* structure-aware mutations: when the target has `parse`/`frame` (a valid encoding taken apart
  into its values, and values put back into valid framing: version byte, length, CRC), a value
  in the tree is replaced by one of another type, dropped, duplicated or grown, and the tree is
  framed again, so the input passes the framing and reaches the field checks; text decoders
  (HCL, filters, HTTP targets) get the same at the token level;
* the seeds themselves.

`outcome(target, data)` runs one input under a deadline (SIGALRM; a decoder that does not return
within `DEADLINE_S` has hung) and returns "valid", the declared error's type name, or the name a
decoder returns as a `Tally` (an answer counted apart, such as the FSM's ApplyFailed); anything
else (an undeclared exception, a hang) raises `Undeclared`, which is the bug the fuzzers look for.

The number of hypothesis examples per test is CAIRN_FUZZ_EXAMPLES (default 200, the CI budget);
bench/fuzz/run.py runs the same targets for as many inputs as asked (BENCHMARKS.md, "Decoder
fuzzing").
"""

from __future__ import annotations

import os
import random
import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

EXAMPLES = int(os.environ.get("CAIRN_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
DEADLINE_S = float(os.environ.get("CAIRN_FUZZ_DEADLINE", "5"))
MAX_INPUT = 4096


class Undeclared(AssertionError):
    """A decoder did something its contract does not allow: another exception, or a hang."""


class Tally(str):
    """A decoder's answer that is neither valid nor an error but is counted on its own (by name)."""


class Hang(BaseException):  # not an Exception: a decoder's `except Exception` must not swallow it
    pass


@dataclass
class Target:
    name: str
    decode: Callable[[bytes], Any]
    declared: tuple[type[BaseException], ...]
    seeds: list[bytes]
    parse: Callable[[bytes], Any] | None = None  # a seed's value tree
    frame: Callable[[Any], bytes] | None = None  # a value tree in valid framing
    text: bool = False  # token-level mutations instead of value trees
    words: Sequence[str] = ()  # tokens worth inserting (text targets)
    mutate: Callable[[random.Random, bytes], bytes] | None = None  # a structure-aware mutation of a seed
    trees: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.parse is not None:
            self.trees = [self.parse(s) for s in self.seeds]


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def outcome(target: Target, data: bytes) -> str:
    """"valid" or the declared error's type name; Undeclared for anything else."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    try:
        result = target.decode(data)
    except Hang:
        raise Undeclared(f"{target.name}: no answer within {DEADLINE_S:g}s for {data[:200]!r}") from None
    except target.declared as err:
        return type(err).__name__
    except RecursionError as err:
        raise Undeclared(f"{target.name}: RecursionError for {data[:200]!r}") from err
    except Exception as err:
        raise Undeclared(f"{target.name}: {type(err).__name__}: {err} for {data[:200]!r}") from err
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return str(result) if type(result) is Tally else "valid"


# ------------------------------------------------------------------------------- byte mutations

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 63, (1 << 64) - 1]


def mutate_bytes(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[rng.randrange(len(buf) + 1):]
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:
            buf[min(pos, len(buf) - 1)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op == 4:
            value = rng.choice(INTERESTING)
            width = rng.choice((1, 2, 4, 8))
            buf[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, rng.choice(("big", "little")))
        elif op == 5 and buf:
            start = rng.randrange(len(buf))
            chunk = buf[start:start + rng.randint(1, 32)]
            buf[pos:pos] = chunk * rng.randint(1, 4)
        elif op == 6 and buf:
            start = rng.randrange(len(buf))
            del buf[start:start + rng.randint(1, 16)]
        elif op == 7 and corpus:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        else:
            buf += rng.randbytes(rng.randint(0, 16))
    return bytes(buf[:MAX_INPUT * 4])


# ------------------------------------------------------------------------------- value trees

def deep_value(rng: random.Random) -> Any:
    """Arrays or maps nested hundreds deep (msgpack packs at most 511 levels)."""
    value: Any = rng.choice((None, "x", 1, b""))
    for _ in range(rng.choice((50, 300, 500))):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def random_value(rng: random.Random, depth: int = 0) -> Any:
    if rng.random() < 0.01:
        return deep_value(rng)
    kind = rng.randrange(12 if depth < 3 else 9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice(INTERESTING + [-1, -(1 << 63), rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice((0.0, -1.5, 1e308, float("inf"), float("nan")))
    if kind == 4:
        return rng.choice(("", "a", "x" * rng.randint(0, 300), "\u00e9\U0001f600", "node-1", "10.0.0.1:8300"))
    if kind == 5:
        return rng.randbytes(rng.choice((0, 1, 4, 16, 29, 32, 100)))
    if kind in (6, 7, 8):
        return rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, "", "Type", "ok"))
    if kind in (9, 10):
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_value(rng, 9) if rng.random() < 0.3 else rng.choice(("ID", "Node", "Key", "Type", "x")):
            random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if type(tree) is list:
        for i, item in enumerate(tree):
            out += _paths(item, (*prefix, i))
    elif type(tree) is dict:
        for key, item in tree.items():
            out += _paths(item, (*prefix, key))
    return out


def _replace(tree: Any, path: tuple[Any, ...], fn: Callable[[Any], Any]) -> Any:
    if not path:
        return fn(tree)
    head, rest = path[0], path[1:]
    if type(tree) is list:
        copy = list(tree)
    else:
        copy = dict(tree)
    copy[head] = _replace(tree[head], rest, fn)
    return copy


def mutate_tree(rng: random.Random, tree: Any, corpus: Sequence[Any]) -> Any:
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(tree))
        op = rng.randrange(8)

        def change(node: Any, op: int = op) -> Any:
            if op <= 1:
                return random_value(rng)
            if op == 2 and type(node) is list and node:
                copy = list(node)
                del copy[rng.randrange(len(copy))]
                return copy
            if op == 3 and type(node) is list:
                return [*node, random_value(rng)] if rng.random() < 0.5 else node + node
            if op == 4 and type(node) is dict and node:
                copy = dict(node)
                del copy[rng.choice(list(copy))]
                return copy
            if op == 5 and type(node) is int and type(node) is not bool:
                return rng.choice((node + 1, node - 1, -node, node * 1000, 1 << 64, str(node)))
            if op == 6 and type(node) in (str, bytes) and node:
                i = rng.randrange(len(node))
                if type(node) is str:
                    return node[:i] + rng.choice("-zé\udc80\x00.:/ ") + node[i + 1:]
                return node[:i] + rng.randbytes(1) + node[i + 1:]
            if op == 7 and corpus:
                donor = rng.choice(corpus)
                return rng.choice(_flatten(donor))
            return random_value(rng)

        tree = _replace(tree, path, change)
    return tree


def _flatten(tree: Any) -> list[Any]:
    out = [tree]
    if type(tree) is list:
        for item in tree:
            out += _flatten(item)
    elif type(tree) is dict:
        for item in tree.values():
            out += _flatten(item)
    return out


# ------------------------------------------------------------------------------- text tokens

_TOKENS = re.compile(r"[A-Za-z0-9_.\-]+|\s+|\\.|.", re.DOTALL)
TEXT_NOISE = ["\"", "{", "}", "[", "]", "(", ")", "=", ",", "\\", "%", "%zz", "%ff", "\x00", "\n", "/*", "*/",
              "#", "<<EOF\n", "${", "\udc80", "\u00e9", "?", "&", "//"]


def mutate_text(rng: random.Random, text: str, corpus: Sequence[str], words: Sequence[str]) -> str:
    tokens = _TOKENS.findall(text) or [""]
    pool = [*words, *TEXT_NOISE]
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(6)
        pos = rng.randrange(len(tokens) + 1)
        if op == 0 and tokens:
            del tokens[min(pos, len(tokens) - 1)]
        elif op == 1:
            tokens.insert(pos, rng.choice(pool))
        elif op == 2 and tokens:
            tokens[min(pos, len(tokens) - 1)] = rng.choice(pool)
        elif op == 3 and tokens:
            start = rng.randrange(len(tokens))
            tokens[pos:pos] = tokens[start:start + rng.randint(1, 8)] * rng.randint(1, 3)
        elif op == 4 and corpus:
            other = _TOKENS.findall(rng.choice(corpus))
            tokens = tokens[:pos] + other[rng.randrange(len(other) + 1):]
        else:
            opener = rng.choice(("(", "[", "{", "\"", "not (", "a = [", "a = {b = ", *words[:3]))
            tokens.insert(pos, opener * rng.choice((1, 3, 50, 400, 1500)))
    return "".join(tokens)[:MAX_INPUT]


def as_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def from_text(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------------------- generation

MODES = ("random", "bytes", "structure", "seed")


def generate(rng: random.Random, target: Target, mode: str | None = None) -> tuple[str, bytes]:
    """(mode, input) for `target`; the mode is drawn when not given."""
    if mode is None:
        r = rng.random()
        mode = "random" if r < 0.15 else "bytes" if r < 0.5 else "seed" if r < 0.53 else "structure"
    if mode == "random" or not target.seeds:
        return "random", rng.randbytes(rng.choice((0, 1, 2, 5, 8, 13, 24, 64, 300, 1500)))
    seed = rng.choice(target.seeds)
    if mode == "seed":
        return mode, seed
    if mode == "bytes":
        return mode, mutate_bytes(rng, seed, target.seeds)
    if target.mutate is not None:
        return "structure", target.mutate(rng, seed)
    if target.text:
        texts = [as_text(s) for s in target.seeds]
        return "structure", from_text(mutate_text(rng, as_text(seed), texts, target.words))
    if target.frame is not None and target.trees:
        tree = rng.choice(target.trees)
        try:
            return "structure", target.frame(mutate_tree(rng, tree, target.trees))
        except (TypeError, ValueError, OverflowError, RecursionError):  # a tree the encoder cannot write
            return "structure", target.frame(tree)
    return "bytes", mutate_bytes(rng, seed, target.seeds)


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    """The hypothesis strategy for `target`: raw bytes, or a generated input from a drawn seed."""
    # a seed for random.Random, not st.randoms(): hypothesis records every call of its own Random,
    # which costs milliseconds per input; the failing input is printed whole anyway
    generated = st.builds(lambda n, m: generate(random.Random(n), target, m)[1], st.integers(0, 2**64),
                          st.sampled_from(MODES[1:]))
    return st.one_of(st.binary(max_size=MAX_INPUT), generated)



def fuzz_tests(targets: Sequence[Target]) -> Callable[..., None]:
    """One hypothesis test per target (parametrized): every generated input has a declared outcome."""
    by_name = {t.name: t for t in targets}

    @pytest.mark.parametrize("name", list(by_name))
    @FUZZ
    @given(data=st.data())
    def test(name: str, data: st.DataObject) -> None:
        target = by_name[name]
        outcome(target, data.draw(inputs(target), label="input"))

    return test


def seed_tests(targets: Sequence[Target]) -> Callable[..., None]:
    """The seeds decode as valid: the mutations start from real encodings."""

    @pytest.mark.parametrize("target", targets, ids=[t.name for t in targets])
    def test(target: Target) -> None:
        for seed in target.seeds:
            assert outcome(target, seed) == "valid", target.name

    return test
