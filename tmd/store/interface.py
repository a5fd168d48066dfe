"""The one interface to storage, in domain terms; every engine implements it."""

from __future__ import annotations

from zope.interface import Interface

# zope method declarations have no self; the return types are documented, as Deferreds.


class IStore(Interface):
    """The only code that talks to the database. Every method returns a Deferred."""

    def open() -> object:
        """Connect and apply pending migrations. Fires with None."""

    def close() -> object:
        """Finish pending work and disconnect. Fires with None."""

    def check() -> object:
        """Fires with None if the database answers, else fails."""

    def create_room(new: object) -> object:
        """Insert a L{NewRoom}; fires with the L{Room}, or fails with L{NameTaken}."""

    def room(name: str) -> object:
        """Fires with the L{Room} named C{name}, or None."""

    def add_participant(room_id: int, participant_id: str, nickname: str, token_hash: bytes,
                        now_ms: int) -> object:
        """Fires with the new L{Participant}, or fails with L{NameTaken} (nickname)."""

    def participant(room_id: int, token_hash: bytes) -> object:
        """Fires with the L{Participant} of C{room_id} holding that token, or None."""

    def post(room: object, new: object) -> object:
        """
        Give a L{NewMessage} the room's next seq and insert it, in one transaction;
        fires with the committed L{Message}, or fails with L{NotFound}.
        """

    def messages(room: object, after: int, limit: int) -> object:
        """
        Fires with C{(messages, last_seq)}: up to C{limit} undeleted messages with seq
        greater than C{after}, ascending, and the room's last seq, read together.
        """
