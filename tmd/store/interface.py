"""The one interface to storage, in domain terms; every engine implements it."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

from tmd.model import (
    Delivery,
    Held,
    Message,
    NewMessage,
    NewRoom,
    Participant,
    Restricted,
    Room,
    RoomChanges,
    RoomStats,
)

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

    def room_with_participant(name: str, token_hash: bytes,
                              ) -> Deferred[tuple[Room, Participant | None] | None]:
        """
        The room named C{name} and its participant holding the token with that hash
        (None if no one does), read together; None if there is no such room. For
        posts: an engine may answer from memory, as of every change to the room's
        settings and the participant, but with the room's counters (C{last_seq},
        C{peak_online}) as they were.
        """

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

    def message(room_id: int, seq: int) -> Deferred[Message | None]:
        """The undeleted message C{seq} of the room with that id, or None."""

    def announce_change(room: Room, seq: int) -> Deferred[Message | None]:
        """
        The undeleted message C{seq} as it is now, or None; with a shared database the
        other daemons hear that it changed (they read it themselves).
        """

    def vote(room: Room, seq: int, participant_id: str, on: bool,
             now_ms: int) -> Deferred[int | None]:
        """
        Add (C{on}) or take back a participant's vote for question C{seq}, at most one
        each; the question's votes after it, or None if there is no undeleted question C{seq}.
        """

    def voted(room: Room, participant_id: str) -> Deferred[list[int]]:
        """The seqs of the undeleted questions the participant votes for, ascending."""

    def set_answered(room: Room, seq: int, answered: bool) -> Deferred[bool]:
        """Mark question C{seq} answered or not; False if there is no undeleted question C{seq}."""

    def pin(room: Room, seq: int | None) -> Deferred[tuple[Room, int | None] | None]:
        """
        Pin message C{seq} (None: unpin); the room as it is then and the seq pinned
        before, or None if the room is gone.
        """

    def set_restricted(room: Room, restricted: Restricted) -> Deferred[Room | None]:
        """Store the room's restricted words; the updated room, or None if it is gone."""

    def questions(room: Room, top: bool, limit: int) -> Deferred[tuple[list[Message], int]]:
        """
        Up to C{limit} undeleted questions: most votes first (C{top}), else newest first;
        and the room's last seq.
        """

    def hold(held: Held) -> Deferred[None]:
        """Put a post in its room's approval queue."""

    def held_posts(room: Room, participant_id: str | None) -> Deferred[list[Held]]:
        """The room's queue, oldest first: everyone's, or only one participant's."""

    def held_post(room: Room, held_id: str) -> Deferred[Held | None]:
        """One post of the room's queue, or None."""

    def approve(room: Room, held_id: str, new: NewMessage,
                outbox: Sequence[Delivery] = ()) -> Deferred[Message | None]:
        """
        Take the held post out of the queue and add C{new} in its place with the room's
        next seq, in one transaction (as L{post}); None if it is no longer held.
        """

    def reject(room: Room, held_id: str) -> Deferred[Held | None]:
        """Take the held post out of the queue for good; it, or None if it was not there."""

    def stats(room: Room) -> Deferred[RoomStats]:
        """How the room's participants took part."""

    def raise_peak(room_id: int, online: int) -> Deferred[None]:
        """Remember C{online} as the room's peak if it is more than the one stored."""

    def add_outbox(deliveries: Sequence[Delivery]) -> Deferred[None]:
        """
        Store C{deliveries}, in order, in one transaction. A delivery already stored
        (the same id and destination) is left as it is.
        """

    def pending_deliveries(limit: int, destination: str | None = None,
                           ) -> Deferred[list[Delivery]]:
        """
        Up to C{limit} stored deliveries, not dead-lettered, in the order they were
        stored; only C{destination}'s if given.
        """

    def delivered(delivery: Delivery) -> Deferred[None]:
        """Forget C{delivery} (by id and destination); nothing happens if it is gone already."""

    def dead_letter(delivery: Delivery) -> Deferred[None]:
        """Mark C{delivery} dead: kept for the operator, never pending again."""
