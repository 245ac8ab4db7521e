"""Stored messages from before kinds and states became enums in the wire contract.

Ember 0.1 stored outputs with SUCCESS as status 0 (now 1: 0 is STATUS_UNSPECIFIED, every status
moved up by one), and function definitions whose image steps and web endpoints named their kind
by a string at field 1 (now an enum at field 8). Rewrite both, so that deployed apps, their open
calls and their outputs carry on after the upgrade.
"""

import sqlite3

from google.protobuf import unknown_fields

from ember.proto import api_pb2


def _old_kind(msg) -> str:
    """The kind string an old message kept at field 1, now an unknown field."""
    for field in unknown_fields.UnknownFieldSet(msg):
        if field.field_number == 1 and field.wire_type == 2:
            return field.data.decode()
    return ""


def _upgrade_definition(d: api_pb2.FunctionDefinition):
    for step in d.image.steps:
        if not step.kind and (name := _old_kind(step)):
            step.kind = api_pb2.ImageStep.Kind.Value(name.upper())
    for web in [d.web, *d.web_methods.values()]:
        if not web.kind and (name := _old_kind(web)):
            web.kind = api_pb2.WebEndpoint.Kind.Value(name.upper())
    d.DiscardUnknownFields()


def migrate(db: sqlite3.Connection):
    rows = db.execute("SELECT call_id, seq, output FROM outputs").fetchall()
    updates = []
    for call_id, seq, blob in rows:
        out = api_pb2.Output.FromString(blob)
        out.status += 1
        out.DiscardUnknownFields()  # gen_index, which nothing read
        updates.append((out.SerializeToString(), call_id, seq))
    db.executemany("UPDATE outputs SET output=? WHERE call_id=? AND seq=?", updates)
    updates = []
    for function_id, blob in db.execute("SELECT function_id, definition FROM functions").fetchall():
        d = api_pb2.FunctionDefinition.FromString(blob)
        _upgrade_definition(d)
        updates.append((d.SerializeToString(), function_id))
    db.executemany("UPDATE functions SET definition=? WHERE function_id=?", updates)
