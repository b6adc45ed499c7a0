"""The ACL system: the rules language (policy.py), decisions (authorizer.py), the built-in
objects and texts (builtin.py) and token resolution with its cache (resolve.py). Pure: the
tokens, policies and roles live in the state store (appliance/state/acl.py)."""
