"""Server RPC on the server port (8300): the frame format, the listener, outbound connections, the replica feed.

`frames` is the wire format (sans-IO); `connection` dials and reads frames from a stream;
`listener` accepts connections and hands each to the handler its first frame names; `pool` keeps
one outbound connection per peer; `feed` serves client agents. Raft's own frames and the join
hello stay in appliance/raft/transport.py, which uses these. docs/internals/rpc.md has the whole
picture.
"""
