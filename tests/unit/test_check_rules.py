"""Check status rules (appliance.checks.rules): pure functions, no I/O.

Rules cited are reference/consul-api.md §7.3 (status per type, outputs) and §7.4 (flap damping).
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, strategies as st

from appliance.checks import rules
from appliance.checks.rules import (
    CRITICAL,
    PASSING,
    WARNING,
    FlapDamper,
    TailBuffer,
    alias_result,
    dial_error,
    http_error_output,
    http_output,
    http_status,
    script_output,
    script_status,
    split_host_port,
    tcp_output,
    timeout_output,
    udp_output,
    unsupported_check_text,
)

# ------------------------------------------------------------------ status maps (§7.3)


@pytest.mark.parametrize(
    ("code", "status"),
    [(0, PASSING), (1, WARNING), (2, CRITICAL), (127, CRITICAL), (255, CRITICAL), (-9, CRITICAL), (-15, CRITICAL)],
)
def test_script_exit_codes(code, status):
    # Consul docs: exit 0 passing, 1 warning, any other code critical
    assert script_status(code) == status


@pytest.mark.parametrize(
    ("code", "status"),
    [(200, PASSING), (201, PASSING), (204, PASSING), (299, PASSING), (429, WARNING), (199, CRITICAL),
     (300, CRITICAL), (301, CRITICAL), (404, CRITICAL), (428, CRITICAL), (500, CRITICAL), (503, CRITICAL)],
)
def test_http_status_codes(code, status):
    # Consul docs: 2xx passing, 429 Too Many Requests warning, anything else critical
    assert http_status(code) == status


# ------------------------------------------------------------------ outputs (§7.3)


def test_http_output_format():
    out = http_output("GET", "http://localhost:8080/health", 200, "OK", b"ok")
    assert out == "HTTP GET http://localhost:8080/health: 200 OK Output: ok"


def test_http_output_keeps_first_4_kib_of_body():
    body = b"a" * 4096 + b"b" * 100
    out = http_output("POST", "http://x/", 503, "Service Unavailable", body)
    assert out.startswith("HTTP POST http://x/: 503 Service Unavailable Output: aaa")
    assert out.endswith("a")
    assert out.count("a") >= 4096 and "b" not in out.split("Output: ", 1)[1]


def test_http_output_invalid_utf8_does_not_raise():
    assert "Output: " in http_output("GET", "http://x/", 200, "OK", b"\xff\xfe ok")


def test_tcp_udp_success_outputs():
    assert tcp_output("127.0.0.1:80") == "TCP connect 127.0.0.1:80: Success"
    assert udp_output("127.0.0.1:53") == "UDP connect 127.0.0.1:53: Success"


def test_timeout_output_uses_go_duration():
    assert timeout_output(30.0) == "Timed out (30s) running check"
    assert timeout_output(1.5) == "Timed out (1.5s) running check"
    assert timeout_output(90.0) == "Timed out (1m30s) running check"


def test_script_output_untruncated():
    assert script_output(b"all good\n", 9, 4096) == "all good\n"


def test_script_output_truncated_keeps_last_bytes():
    # Consul: "Captured %d of %d bytes\n...\n%s" with the last bytes kept
    data = b"x" * 10 + b"tail"
    out = script_output(data, len(data), 4)
    assert out == "Captured 4 of 14 bytes\n...\ntail"


def test_tail_buffer_circular():
    buf = TailBuffer(8)
    for chunk in (b"0123", b"4567", b"89ab", b"cd"):
        buf.write(chunk)
    assert buf.total == 14
    assert buf.output() == "Captured 8 of 14 bytes\n...\n6789abcd"


@given(st.lists(st.binary(max_size=50), max_size=30), st.integers(min_value=1, max_value=64))
def test_tail_buffer_equals_tail_of_concatenation(chunks, size):
    buf = TailBuffer(size)
    for c in chunks:
        buf.write(c)
    data = b"".join(chunks)
    assert buf.total == len(data)
    assert buf.output() == script_output(data, len(data), size)


def test_dial_errors_read_like_go():
    assert dial_error("tcp", "127.0.0.1:9", errno.ECONNREFUSED) == "dial tcp 127.0.0.1:9: connect: connection refused"
    assert dial_error("tcp", "10.0.0.1:80", timed_out=True) == "dial tcp 10.0.0.1:80: i/o timeout"
    assert dial_error("tcp", "nohost:80", lookup_failed=True, host="nohost") == "dial tcp: lookup nohost: no such host"
    assert dial_error("tcp", "h:1", errno.EHOSTUNREACH).endswith("connect: no route to host")


def test_http_error_output_names_method_like_go():
    out = http_error_output("GET", "http://127.0.0.1:9/", "dial tcp 127.0.0.1:9: connect: connection refused")
    assert out == 'Get "http://127.0.0.1:9/": dial tcp 127.0.0.1:9: connect: connection refused'
    assert http_error_output("POST", "http://x/", "e").startswith('Post "http://x/"')


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("localhost:8500", ("localhost", 8500)), ("[::1]:53", ("::1", 53)),
     (":8080", ("", 8080))],
)
def test_split_host_port(addr, expected):
    assert split_host_port(addr) == expected


@pytest.mark.parametrize("addr", ["localhost", "::1", "[::1]", "host:port", "h:70000", "[::1]53"])
def test_split_host_port_rejects(addr):
    with pytest.raises(ValueError):
        split_host_port(addr)


def test_unsupported_types_have_a_clear_text():
    assert unsupported_check_text("grpc") == "Invalid check: gRPC checks are not supported by cairn"
    assert "Docker" in unsupported_check_text("docker")
    for kind in ("http", "tcp", "udp", "script", "ttl", "alias"):
        assert unsupported_check_text(kind) is None


# ------------------------------------------------------------------ flap damping (§7.4)


def test_damper_defaults_apply_every_result_at_once():
    d = FlapDamper()
    assert d.decide(CRITICAL, PASSING, "ok").status == PASSING
    assert d.decide(PASSING, CRITICAL, "bad").status == CRITICAL
    assert d.decide(CRITICAL, WARNING, "meh").status == WARNING


def test_damper_first_result_applies_immediately_even_with_thresholds():
    # Consul: counters start saturated, so the first result is applied at once
    assert FlapDamper(success_before_passing=3).decide(CRITICAL, PASSING, "ok").status == PASSING
    d = FlapDamper(failures_before_critical=3)
    assert d.decide(PASSING, CRITICAL, "bad").status == CRITICAL


def test_damper_success_before_passing():
    d = FlapDamper(success_before_passing=2)
    assert d.decide(CRITICAL, CRITICAL, "down").status == CRITICAL
    first = d.decide(CRITICAL, PASSING, "up 1")
    assert (first.status, first.output, first.event) == (CRITICAL, "up 1", "below_success")
    assert d.decide(CRITICAL, PASSING, "up 2").status == PASSING


def test_damper_failures_before_warning_then_critical():
    d = FlapDamper(failures_before_warning=1, failures_before_critical=3)
    assert d.decide(CRITICAL, PASSING, "ok").status == PASSING
    assert d.decide(PASSING, CRITICAL, "f1").status == WARNING  # 1 >= warning threshold
    assert d.decide(WARNING, CRITICAL, "f2").status == WARNING
    last = d.decide(WARNING, CRITICAL, "f3")
    assert (last.status, last.event) == (CRITICAL, "critical")


def test_damper_failure_below_thresholds_keeps_status_but_updates_output():
    d = FlapDamper(failures_before_warning=2, failures_before_critical=2)
    d.decide(CRITICAL, PASSING, "ok")
    one = d.decide(PASSING, CRITICAL, "blip")
    assert (one.status, one.output, one.event) == (PASSING, "blip", "below_failure")
    assert d.decide(PASSING, PASSING, "ok").status == PASSING  # a success resets the failures
    assert d.decide(PASSING, CRITICAL, "blip").status == PASSING
    assert d.decide(PASSING, CRITICAL, "down").status == CRITICAL


def test_damper_warning_counts_as_success():
    d = FlapDamper(success_before_passing=2, failures_before_critical=2)
    d.decide(CRITICAL, CRITICAL, "x")
    assert d.decide(CRITICAL, WARNING, "w").status == CRITICAL
    assert d.decide(CRITICAL, WARNING, "w").status == WARNING


@given(st.lists(st.sampled_from([PASSING, WARNING, CRITICAL]), min_size=1, max_size=40),
       st.integers(0, 4), st.integers(0, 4), st.integers(0, 4))
def test_damper_never_invents_a_status(results, sbp, fbw, fbc):
    fbw = min(fbw, fbc)
    d = FlapDamper(sbp, fbw, fbc)
    current = CRITICAL
    for r in results:
        current = d.decide(current, r, r).status
        assert current in (PASSING, WARNING, CRITICAL)
    # a run of enough identical results always lands on that result
    for _ in range(max(sbp, fbc) + 1):
        current = d.decide(current, results[-1], "").status
    assert current == results[-1]


# ------------------------------------------------------------------ alias (§7.3 Alias)


def _check(cid, status, service_id="", name="", output=""):
    return {"Node": "n1", "CheckID": cid, "Name": name or cid, "Status": status, "ServiceID": service_id,
            "Output": output}


def test_alias_no_checks_passes():
    assert alias_result([], "n1", "web-1", service_exists=True) == (PASSING, "No checks found.")


def test_alias_all_passing():
    checks = [_check("serfHealth", PASSING), _check("service:web-1", PASSING, "web-1")]
    assert alias_result(checks, "n1", "web-1", service_exists=True) == (PASSING, "All checks passing.")


def test_alias_critical_beats_warning_and_ignores_other_services():
    checks = [
        _check("a", WARNING, "web-1", "A", "slow"),
        _check("b", CRITICAL, "web-1", "B", "down"),
        _check("c", CRITICAL, "db-1", "C", "other service"),
    ]
    assert alias_result(checks, "n1", "web-1", service_exists=True) == (CRITICAL, 'Aliased check "B" failing: down')
    only_warning = [checks[0], checks[2]]
    assert alias_result(only_warning, "n1", "web-1", service_exists=True)[0] == WARNING


def test_alias_node_check_counts():
    checks = [_check("_node_maintenance", CRITICAL, name="Node Maintenance Mode"),
              _check("service:web-1", PASSING, "web-1")]
    assert alias_result(checks, "n1", "web-1", service_exists=True)[0] == CRITICAL


def test_alias_missing_service_is_critical():
    status, output = alias_result([_check("serfHealth", PASSING)], "n1", "web-9", service_exists=False)
    assert status == CRITICAL
    assert "web-9" in output and "n1" in output


def test_alias_skips_itself():
    checks = [_check("alias-web", CRITICAL), _check("service:web-1", PASSING, "web-1")]
    assert alias_result(checks, "n1", "web-1", service_exists=True, exclude_check_id="alias-web")[0] == PASSING


def test_rules_module_is_sans_io():
    # DESIGN: sans-IO cores import no clock, randomness, sockets or processes (test_layout checks all)
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(rules))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"asyncio", "time", "random", "socket", "subprocess", "threading", "aiohttp", "anyio"}
