"""Password hashes (passwords.py): scrypt with the cost in the string, checked in constant
time; what a new password must be; and a password's bound on the wire."""

from __future__ import annotations

import pytest

from zchat import protocol as p
from zchat.errors import InvalidInput, ProtocolError
from zchat.passwords import (
    MAX_PASSWORD_BYTES,
    Cost,
    check_new_password,
    generate_password,
    hash_password,
    is_hash,
    verify_password,
)

CHEAP = Cost(log2_n=4, r=8, p=1)  # the format, not the cost, is under test here


def test_a_hash_checks_its_password_only() -> None:
    stored = hash_password("correct horse", CHEAP)
    assert stored.startswith("$scrypt$ln=4,r=8,p=1$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert hash_password("correct horse", CHEAP) != stored  # a fresh salt each time


def test_the_default_cost_is_owasps_least() -> None:
    assert hash_password("correct horse").startswith("$scrypt$ln=14,r=8,p=5$")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain text",
        "$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ",  # no key
        "$bcrypt$ln=4,r=8,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,
        "$scrypt$ln=40,r=8,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,  # a cost that would hang
        "$scrypt$ln=4,r=8$c2FsdHNhbHRzYWx0$" + "A" * 43,
        "$scrypt$ln=4,r=8,p=1$!!!$" + "A" * 43,
    ],
)
def test_a_stored_string_that_is_no_hash_never_matches(stored: str) -> None:
    assert not is_hash(stored)
    assert not verify_password("anything", stored)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least 8"),
        (" leading space", "starts or ends with a space"),
        ("Alice.Smith", "is the name"),
        ("x" * (MAX_PASSWORD_BYTES + 1), f"longer than {MAX_PASSWORD_BYTES} bytes"),
    ],
)
def test_a_new_password_is_judged(password: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        check_new_password("alice.smith", password)


def test_a_generated_password_passes() -> None:
    password = generate_password()
    assert len(password) == 20 and check_new_password("alice", password) == password


def test_a_password_on_the_wire_is_bounded_and_never_quoted() -> None:
    secret = "a" * 32
    join = p.Join("alice", secret, secret, ("general",), password="ü" * 600)
    with pytest.raises(ProtocolError) as caught:
        p.decode_client(p.encode_client(join))
    assert "longer than 1024 bytes" in str(caught.value) and "ü" not in str(caught.value)
    assert "password" not in repr(p.Join("a", secret, secret, ("g",), password="hunter22"))
    assert "hunter22" not in repr(p.Passwd(secret, "hunter22", "hunter23"))
