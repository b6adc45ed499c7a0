"""Prepared queries in the store: the table, its writes, and what a session's end does to it.

How it works
------------
The table maps a query's ID to its definition (appliance/queries/definition.py gives the shape)
with `CreateIndex`/`ModifyIndex`. `set_query` is Consul's preparedQuerySetTxn: what depends on
the store is checked here, at apply, with Consul's texts (reference/coordination.md §6.2):

    name '<n>' aliases an existing query name          another query has this Name (no case)
    a query template with an empty name already exists two catch-all templates
    name '<n>' aliases an existing query ID            the Name is another query's ID
    invalid session "<id>"                              the Session does not exist

An update keeps the query's CreateIndex. `delete_query` removes one (an unknown ID is a no-op).
A query bound to a session goes with it: sessions.destroy calls `session_ended` inside the same
write (the same index) that ends the session, whatever ended it. Every write touches the
PREPARED_QUERIES watch key. Pure functions over the store; no I/O.
"""

from __future__ import annotations

from typing import Any

from appliance.state import watchkeys
from appliance.state.store import Record, Store


class QueryStoreError(ValueError):
    """A query the store refuses (Consul's state-store text)."""


def _name_taken(s: Store, query: Record) -> None:
    qid, name = query["ID"], query.get("Name") or ""
    if name:
        for other in s.prepared_queries.values():
            if other["ID"] != qid and (other.get("Name") or "").lower() == name.lower():
                raise QueryStoreError(f"name '{name}' aliases an existing query name")
        if name in s.prepared_queries and name != qid:
            raise QueryStoreError(f"name '{name}' aliases an existing query ID")
    elif (query.get("Template") or {}).get("Type"):
        for other in s.prepared_queries.values():
            if other["ID"] != qid and not other.get("Name") and (other.get("Template") or {}).get("Type"):
                raise QueryStoreError("a query template with an empty name already exists")


def set_query(s: Store, index: int, query: Record) -> None:
    """Insert or replace a query (its ID given); QueryStoreError if the store refuses it."""
    _name_taken(s, query)
    session = query.get("Session") or ""
    if session and session not in s.sessions:
        raise QueryStoreError(f'invalid session "{session}"')
    prev = s.prepared_queries.get(query["ID"])
    rec: dict[str, Any] = {**query, "CreateIndex": prev["CreateIndex"] if prev else index, "ModifyIndex": index}
    s.prepared_queries[query["ID"]] = rec
    s.touch(index, watchkeys.PREPARED_QUERIES)


def delete_query(s: Store, index: int, qid: str) -> bool:
    if s.prepared_queries.pop(qid, None) is None:
        return False
    s.touch(index, watchkeys.PREPARED_QUERIES)
    return True


def session_ended(s: Store, index: int, sid: str) -> None:
    """Delete the queries bound to a session that was just invalidated (same write, same index)."""
    for qid in [q["ID"] for q in s.prepared_queries.values() if q.get("Session") == sid]:
        delete_query(s, index, qid)


def all_queries(s: Store) -> list[Record]:
    """Every query, ordered by ID (memdb's id index)."""
    return [s.prepared_queries[k] for k in sorted(s.prepared_queries)]
