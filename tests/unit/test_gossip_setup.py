"""The agent's LAN gossip settings (appliance/gossip/pool_setup.py and the `gossip_lan` config block).

Consul's overrides of memberlist's LAN profile (gossip-notes §10.4): dead-node reclaim 30 s,
leave propagate delay 3 s, reconnect timeout 72 h; `gossip_lan { ... }` keys (Consul's names and
units) on top, rejected with the key the user wrote when memberlist's rules forbid them; the
keyring file and the member snapshot live under data_dir and never in -dev.
"""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, build_agent_config
from appliance.gossip.pool_setup import consul_lan_config, keyring_path, lan_driver, snapshot_path


def test_consul_overrides_of_the_lan_profile():
    cfg = consul_lan_config()
    assert (cfg.probe_interval_s, cfg.probe_timeout_s, cfg.suspicion_mult) == (1.0, 0.5, 4)
    assert cfg.dead_node_reclaim_time_s == 30.0 and cfg.leave_propagate_delay_s == 3.0
    assert cfg.reconnect_timeout_s == 72 * 3600.0 and cfg.nack_delay_fraction == 0.8


def test_gossip_lan_block(tmp_path):
    path = tmp_path / "gossip.hcl"
    path.write_text('gossip_lan {\n  probe_interval = "2s"\n  probe_timeout = "800ms"\n  gossip_nodes = 4\n'
                    '  suspicion_mult = 5\n  retransmit_mult = 3\n  gossip_interval = "100ms"\n}\n')
    cfg = build_agent_config(["-dev", "-config-file", str(path)])
    driver = lan_driver(cfg, {"role": "consul"})
    g = driver.config
    assert (g.probe_interval_s, g.probe_timeout_s, g.gossip_nodes, g.suspicion_mult) == (2.0, 0.8, 4, 5)
    assert (g.retransmit_mult, g.gossip_interval_s, g.leave_propagate_delay_s) == (3, 0.1, 3.0)

    path.write_text('gossip_lan { probe_interval = "500ms", probe_timeout = "1s" }\n')
    with pytest.raises(ConfigError, match="gossip_lan.probe_timeout must be positive and shorter than "
                                          "gossip_lan.probe_interval"):
        build_agent_config(["-dev", "-config-file", str(path)])
    path.write_text('gossip_lan { no_such_key = 1 }\n')
    with pytest.raises(ConfigError):
        build_agent_config(["-dev", "-config-file", str(path)])


def test_keyring_and_snapshot_paths(tmp_path):
    dev = build_agent_config(["-dev"])
    assert keyring_path(dev) == "" and snapshot_path(dev) == ""
    server = build_agent_config(["-server", "-bootstrap", "-data-dir", str(tmp_path), "-node", "n1"])
    assert keyring_path(server) == str(tmp_path / "serf" / "local.keyring")
    assert snapshot_path(server) == str(tmp_path / "serf" / "local.snapshot")
    no_file = build_agent_config(["-server", "-bootstrap", "-data-dir", str(tmp_path), "-node", "n1",
                                  "-hcl", "disable_keyring_file = true"])
    assert keyring_path(no_file) == ""
