"""A forked child reports a failure one way (`children.reported`): where, secrets masked, and
the error's own class when it can cross the pipe."""

from __future__ import annotations

import pickle

from syncbridge.children import reported
from syncbridge.errors import AuthError, FatalError, RecordError, RetriableError
from syncbridge.redaction import register_secret

SECRET = "s3cr3t-session-token-7781"


def test_our_error_keeps_its_class_and_loses_its_secret() -> None:
    register_secret(SECRET)
    report = reported("crm/contacts", AuthError(f"session {SECRET} was refused"))
    assert type(report) is AuthError
    assert str(report) == "crm/contacts: session *** was refused"


def test_a_foreign_error_becomes_fatal_and_names_its_type() -> None:
    register_secret(SECRET)
    report = reported("crm/contacts", OSError(f"cannot open /tmp/{SECRET}"))
    assert type(report) is FatalError
    assert str(report) == "crm/contacts: OSError: cannot open /tmp/***"


def test_an_error_with_a_richer_constructor_is_wrapped_not_lost() -> None:
    report = reported("rules", RecordError("email", "x", "not an address"))
    assert type(report) is FatalError
    assert "RecordError: email: not an address" in str(report)


def test_what_is_reported_survives_the_pipe() -> None:
    for exc in (RetriableError("busy"), RecordError("f", 1, "bad"), KeyboardInterrupt()):
        report = reported("here", exc)
        again = pickle.loads(pickle.dumps(report))
        assert (type(again), str(again)) == (type(report), str(report))
