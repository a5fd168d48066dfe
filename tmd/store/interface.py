"""The one interface to storage, in domain terms; every engine implements it."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

from tmd.model import Delivery, Message, NewMessage, NewRoom, Participant, Room, RoomChanges

# zope interface methods are declared without self.


class IStore(Interface):
    """
    The only code that talks to the database.

    The writes that change a room take C{outbox}: deliveries stored in the same
    transaction as the change, and only if it happened (see L{add_outbox}). The
    outbox is opt-in: without one, a write costs what it always did.
    """

    def open() -> Deferred[None]:
        """Connect and apply pending migrations."""

    def close() -> Deferred[None]:
        """Finish pending work and disconnect."""

    def check() -> Deferred[None]:
        """Succeed if the database answers."""

    def create_room(new: NewRoom, outbox: Sequence[Delivery] = ()) -> Deferred[Room]:
        """Insert a room; fails with L{tmd.errors.NameTaken} if the name is in use."""

    def room(name: str) -> Deferred[Room | None]:
        """The room named C{name}, or None."""

    def add_participant(room_id: int, participant_id: str, nickname: str, token_hash: bytes,
                        now_ms: int) -> Deferred[Participant]:
        """A new participant; fails with L{tmd.errors.NameTaken} if the nickname is in use."""

    def participant(room_id: int, token_hash: bytes) -> Deferred[Participant | None]:
        """The participant of C{room_id} holding the token with that hash, or None."""

    def participants(room: Room) -> Deferred[list[Participant]]:
        """Everyone who joined C{room}, in the order they joined."""

    def set_muted(room: Room, participant_id: str, muted: bool) -> Deferred[bool]:
        """Mute or unmute a participant of C{room}; False if there is no such participant."""

    def post(room: Room, new: NewMessage, outbox: Sequence[Delivery] = ()) -> Deferred[Message]:
        """
        Give C{new} the room's next seq and insert it, in one transaction; fires with
        the committed message, or fails with L{tmd.errors.NotFound}. In each body of
        C{outbox}, the first L{tmd.model.SEQ_PLACEHOLDER} becomes that seq.
        """

    def update_room(room: Room, changed: RoomChanges,
                    outbox: Sequence[Delivery] = ()) -> Deferred[Room | None]:
        """Store the room's new settings; the updated room, or None if it is gone."""

    def delete_room(room: Room, outbox: Sequence[Delivery] = ()) -> Deferred[bool]:
        """Delete the room and everything in it; False if it was gone already."""

    def close_expired(now_ms: int, limit: int) -> Deferred[list[Room]]:
        """
        Close up to C{limit} rooms that expired by C{now_ms} and are not closed yet; the
        rooms as closed. Each room is closed by one caller, however many race.
        """

    def purge_expired(before_ms: int, limit: int) -> Deferred[list[Room]]:
        """Delete up to C{limit} rooms expired by C{before_ms}, with all in them; those rooms."""

    def delete_message(room: Room, seq: int, outbox: Sequence[Delivery] = ()) -> Deferred[bool]:
        """Mark a message deleted (its seq stays used); False if there is no such message."""

    def tagged_rooms(now_ms: int) -> Deferred[list[Room]]:
        """The rooms open at C{now_ms} (not paused, closed, expired) with hashtags, oldest first."""

    def social_message(room: Room, network: str, source_id: str) -> Deferred[int | None]:
        """The seq of C{room}'s undeleted social message from that post of C{network}, or None."""

    def messages(room: Room, after: int, limit: int) -> Deferred[tuple[list[Message], int]]:
        """
        Up to C{limit} undeleted messages with seq greater than C{after}, ascending,
        and the room's last seq, read in one transaction.
        """

    def add_outbox(deliveries: Sequence[Delivery]) -> Deferred[None]:
        """
        Store C{deliveries}, in order, in one transaction. A delivery already stored
        (the same id and destination) is left as it is.
        """

    def pending_deliveries(limit: int) -> Deferred[list[Delivery]]:
        """Up to C{limit} stored deliveries, not dead-lettered, in the order they were stored."""

    def delivered(delivery: Delivery) -> Deferred[None]:
        """Forget C{delivery} (by id and destination); nothing happens if it is gone already."""

    def dead_letter(delivery: Delivery) -> Deferred[None]:
        """Mark C{delivery} dead: kept for the operator, never pending again."""
