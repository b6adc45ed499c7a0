"""The built-in Connect proxy: an L4 mutual-TLS data plane (`cairn connect proxy`).

config.py turns flags or an agent registration into a `ProxyConfig`; tls.py builds the TLS
contexts from the agent's leaf certificate and CA roots; agent.py talks to the agent's HTTP API
(requests, blocking watches); runner.py runs the listeners, the authorization of inbound
connections and their re-check when intentions change; metrics.py counts under Consul's
`consul.proxy.*` names. These are drivers (sockets, tasks), used by appliance/cli/connect_proxy.py.
"""
