"""Hostile configuration text into the HCL reader and the configuration loader.

Declared outcomes (appliance/config/hcl.py, loader.py): `hcl.loads` returns a mapping or raises
`HCLError` (line and column in its text); a whole file through the loader (`load_file`: read as
UTF-8, parsed as HCL or JSON, checked against the model and the service and check definitions)
gives its fragment or a `ConfigError`, the one-line message the agent prints before it exits.
Never another exception, never a hang (deeply nested brackets included). Inputs: random bytes,
byte mutations and token-level mutations of real configuration files in both formats.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

from appliance.config import hcl
from appliance.config.errors import ConfigError
from appliance.config.loader import load_file
from tests.fuzz.harness import Target, as_text, from_text, fuzz_tests, seed_tests

HCL = r'''
datacenter = "dc1"
data_dir = "/var/lib/cairn"
node_name = "server-1"
server = true
bootstrap_expect = 3
retry_join = ["10.0.0.2", "10.0.0.3",]
encrypt = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
ports { dns = 8600  http = 8500 }
ports { https = -1 }
acl { enabled = true  default_policy = "deny"  tokens { agent = "a" } }
dns_config { only_passing = true  service_ttl { "*" = "5s" }  node_ttl = "10s" }
# comment
// comment
/* block */
node_meta { rack = "r1" }
service {
  name = "web"  id = "web-1"  port = 8080  tags = ["v1"]  meta { a = "${not}" }
  check { http = "http://localhost:8080/health"  interval = "10s"  timeout = "1s" }
}
service { name = "db" port = 5432 }
check { id = "mem" name = "memory" args = ["/bin/check", "-x"] interval = "30s" }
limits { http_max_conns_per_client = 0x20 }
ui_config { enabled = true }
'''
HEREDOC = ('x = <<EOF\ntext "q" \\n\nEOF\ny = <<-END\n  indented\n  END\n'
           'obj = { "*" = "5s", b = 1.5e2 }\nl "a" "b" { k = [1, [2, {c = 3}]] }\n')
JSON = json.dumps({"datacenter": "dc1", "ports": {"dns": 8600, "http": -1}, "server": False,
                   "services": [{"name": "web", "port": 80, "checks": [{"ttl": "10s"}]}],
                   "telemetry": {"prometheus_retention_time": "24h"}, "retry_join": ["a"], "log_level": "INFO"})
WORDS = ["service", "check", "services", "checks", "ports", "acl", "tokens", "dns_config", "data_dir", "server",
         "true", "false", "null", "=", "{", "}", "[", "]", ",", ":", "\"", "<<EOF\n", "\nEOF\n", "<<-X\n", "0x",
         "1e999", "-", "9" * 40, "\\u00", "\\x", "\"\\", "interval", "ttl", "port", "name", "id", "args"]
_DIR = tempfile.mkdtemp(prefix="cairn-fuzz-config-")
atexit.register(shutil.rmtree, _DIR, True)


def _load(data: bytes, suffix: str) -> None:
    path = os.path.join(_DIR, f"fuzz-{os.getpid()}{suffix}")  # the long run forks workers after import
    with open(path, "wb") as fh:
        fh.write(data)
    load_file(path, "", [])


def _hcl(data: bytes) -> None:
    hcl.loads(as_text(data))


TARGETS = [
    Target("config.hcl", _hcl, (hcl.HCLError,), [from_text(HCL), from_text(HEREDOC)], text=True, words=WORDS),
    Target("config.load.hcl", lambda d: _load(d, ".hcl"), (ConfigError,), [from_text(HCL)], text=True, words=WORDS),
    Target("config.load.json", lambda d: _load(d, ".json"), (ConfigError,), [from_text(JSON)], text=True,
           words=WORDS),
]

test_config_decoders_have_only_declared_outcomes = fuzz_tests(TARGETS)
test_config_seeds_are_valid = seed_tests(TARGETS)
