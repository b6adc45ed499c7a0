"""The DNS interface: name parsing and answers (sans-IO), reply packing, and the UDP/TCP server."""
