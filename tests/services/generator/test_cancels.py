"""The cancel book: what the worker remembers about cancels, and for how long."""

from __future__ import annotations

from framebus.services.generator.cancels import CancelBook
from tests.services.generator.fakes import request


def test_a_cancel_names_a_request_by_tenant_and_id() -> None:
    book = CancelBook()
    book.cancel("acme", "r-1")
    assert book.is_cancelled(request("r-1"))
    assert not book.is_cancelled(request("r-1", tenant_id="globex")), "another tenant's r-1 is another request"


def test_a_shared_render_is_cancelled_only_when_all_who_share_it_are() -> None:
    book = CancelBook()
    book.cancel("acme", "a")
    assert not book.all_cancelled([request("a"), request("b")])
    book.cancel("acme", "b")
    assert book.all_cancelled([request("a"), request("b")])


def test_a_reported_jobs_cancels_are_forgotten_and_the_rest_kept() -> None:
    book = CancelBook()
    for request_id in ("done", "later"):
        book.cancel("acme", request_id)
    book.forget([request("done"), request("never-cancelled")])
    assert len(book) == 1 and book.is_cancelled(request("later")) and not book.is_cancelled(request("done"))
