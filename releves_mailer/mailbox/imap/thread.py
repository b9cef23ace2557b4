"""THREAD and UID THREAD (RFC 5256 section 3): ORDEREDSUBJECT and REFERENCES, as the
algorithms of its section 5 describe them, step by step."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from releves_mailer.mailbox.contracts import FetchColumn, MessageRecord
from releves_mailer.mailbox.imap.connection import CommandContext
from releves_mailer.mailbox.imap.esearch import check_charset, parse_charset
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.search import find_messages, header_values, parse_search_keys
from releves_mailer.mailbox.imap.sort import load_records, sent_date
from releves_mailer.mailbox.imap.subject import base_subject, casemap

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession

__all__ = [
    "MAX_REFERENCES",
    "Message",
    "cmd_thread",
    "format_threads",
    "ordered_subject",
    "references",
]

_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
_COLUMNS: set[FetchColumn] = {"header", "envelope", "internal_date"}
#: References of one message that count (the last ones, nearest the message).
MAX_REFERENCES = 256
#: Above this many messages, threading and sort keys are computed in a worker thread.
_IN_LOOP = 1000
_MSG_ID = re.compile(rb"<([^<>\s]+@[^<>\s]+)>")


@dataclass(slots=True)
class Message:
    """What threading needs of one message."""

    number: int  # sequence number or UID, as answered
    seq: int
    date: int
    subject: bytes  # base subject, i;ascii-casemap form
    reply: bool
    message_id: bytes | None = None
    references: list[bytes] = field(default_factory=list)

    @property
    def order(self) -> tuple[int, int]:
        """Sent date, then sequence number (RFC 5256 section 2.2)."""
        return self.date, self.seq


@dataclass(eq=False, slots=True)
class Node:
    """A container of the REFERENCES algorithm; a dummy has no message."""

    message: Message | None = None
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    def order(self) -> tuple[int, int]:
        # A dummy sorts as its first child (children are sorted before their parents).
        if self.message is not None:
            return self.message.order
        return self.children[0].order() if self.children else (0, 0)

    def subject_message(self) -> Message | None:
        if self.message is not None:
            return self.message
        return self.children[0].message if self.children else None

    def is_ancestor_of(self, other: Node) -> bool:
        if not self.children:
            return other is self  # the common case, without walking up a long thread
        cursor: Node | None = other
        while cursor is not None:
            if cursor is self:
                return True
            cursor = cursor.parent
        return False

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)


def message_of(record: MessageRecord, number: int, seq: int) -> Message:
    subjects = header_values(record.header, "subject")
    subject, reply = base_subject(subjects[0] if subjects else None)
    message = Message(number, seq, sent_date(record), casemap(subject), reply)
    ids = header_values(record.header, "message-id")
    if ids:
        found = _MSG_ID.search(ids[0])
        message.message_id = found.group(1) if found else None
    references = [m.group(1) for v in header_values(record.header, "references") for m in _ids(v)]
    if not references:
        replies = header_values(record.header, "in-reply-to")
        first = next(_ids(replies[0]), None) if replies else None
        references = [first.group(1)] if first is not None else []
    # The closest ancestors matter most; a crafted header of thousands of ids would make
    # linking them cost their square.
    message.references = references[-MAX_REFERENCES:]
    return message


def _ids(value: bytes) -> Iterator[re.Match[bytes]]:
    return _MSG_ID.finditer(value)


# region ORDEREDSUBJECT #################################################################


def ordered_subject(messages: list[Message]) -> list[Node]:
    """Sorted by base subject then sent date; one thread per base subject whose first
    message is the parent of all the others; threads by the sent date of their first."""
    ordered = sorted(messages, key=lambda m: (m.subject, m.date, m.seq))
    threads: list[Node] = []
    for _subject, group in itertools.groupby(ordered, key=lambda m: m.subject):
        members = list(group)
        root = Node(members[0])
        for member in members[1:]:
            root.adopt(Node(member))
        threads.append(root)
    threads.sort(key=lambda node: node.order())
    return threads


# endregion
# region REFERENCES #####################################################################


def references(messages: list[Message]) -> list[Node]:
    """RFC 5256 section 5, REFERENCES, steps 1 to 6; ``messages`` in mailbox order."""
    by_id: dict[bytes, Node] = {}
    nodes: list[Node] = []
    # Step 1: containers by Message-ID; a missing or duplicate one gets its own container.
    for message in messages:
        node = None
        if message.message_id is not None:
            node = by_id.get(message.message_id)
            if node is not None and node.message is not None:
                node = None  # a duplicate: this message keeps a unique id of its own
            elif node is None:
                node = by_id[message.message_id] = Node()
        node = node or Node()
        node.message = message
        nodes.append(node)
    for node in nodes:
        assert node.message is not None
        chain = [_container(by_id, ref) for ref in node.message.references]
        # 1B: link the references pairwise, never over an existing parent or into a loop.
        for parent, child in itertools.pairwise(chain):
            if child.parent is None and parent is not child and not child.is_ancestor_of(parent):
                parent.adopt(child)
        # 1C: the last reference becomes the parent, replacing any previous one.
        last = chain[-1] if chain else None
        if last is None or last is node or node.is_ancestor_of(last):
            if node.parent is not None:
                node.parent.children.remove(node)
                node.parent = None
        else:
            last.adopt(node)
    # Step 2: the root set.
    containers = list({id(n): n for n in [*nodes, *by_id.values()]}.values())
    roots = [n for n in containers if n.parent is None]
    # Step 3: prune dummies.
    top = _prune(roots)
    # Step 4: the top level by sent date (a dummy by its first child, sorted first).
    for node in top:
        if node.message is None:
            node.children.sort(key=Node.order)
    top.sort(key=Node.order)
    # Step 5: merge threads with the same base subject.
    top = _merge_subjects(top)
    # Step 6: every set of siblings by sent date, children before parents.
    for node in top:
        _sort_tree(node)
    top.sort(key=Node.order)
    return top


def _container(by_id: dict[bytes, Node], message_id: bytes) -> Node:
    node = by_id.get(message_id)
    if node is None:
        node = by_id[message_id] = Node()
    return node


def _descendants(roots: list[Node]) -> list[Node]:
    """Every node under ``roots``, parents before their children (no recursion: a thread
    may be thousands of replies deep)."""
    order: list[Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return order


def _prune(roots: list[Node]) -> list[Node]:
    """Step 3: dummies without children go, others give their place to their children,
    except at the root, where a dummy stays unless it has only one child."""
    for node in reversed(_descendants(roots)):  # children first
        kept: list[Node] = []
        for child in node.children:
            if child.message is None:
                kept.extend(child.children)  # already pruned themselves
            else:
                kept.append(child)
        node.children = kept
        for child in kept:
            child.parent = node
    top: list[Node] = []
    for root in roots:
        if root.message is not None or len(root.children) > 1:
            top.append(root)
        elif root.children:
            only = root.children[0]
            only.parent = None
            top.append(only)
    return top


def _merge_subjects(top: list[Node]) -> list[Node]:
    table: dict[bytes, Node] = {}
    for node in top:
        subject = _thread_subject(node)
        if subject is None:
            continue
        held = table.get(subject)
        if held is None:
            table[subject] = node
            continue
        held_reply = held.message is not None and held.message.reply
        node_reply = node.message is not None and node.message.reply
        if held.message is not None and (node.message is None or (held_reply and not node_reply)):
            table[subject] = node
    dummies: list[Node] = []
    deleted: set[int] = set()
    for node in top:
        if node.parent is not None:
            continue  # already merged under a dummy: no longer a child of the root
        subject = _thread_subject(node)
        held = table.get(subject) if subject is not None else None
        if held is None or held is node:
            continue
        if held.message is None and node.message is None:
            for child in list(node.children):
                held.adopt(child)
            deleted.add(id(node))
        elif held.message is None or (node.message is not None and _replies_to(node, held)):
            held.adopt(node)
        else:
            dummy = Node()
            dummy.adopt(held)
            dummy.adopt(node)
            assert subject is not None
            table[subject] = dummy
            dummies.append(dummy)
    kept = [n for n in top if n.parent is None and id(n) not in deleted]
    return kept + [d for d in dummies if d.parent is None]


def _replies_to(node: Node, held: Node) -> bool:
    """The current message is a reply or forward and the one in the table is not."""
    return bool(node.message and node.message.reply and held.message and not held.message.reply)


def _thread_subject(node: Node) -> bytes | None:
    message = node.subject_message()
    if message is None or not message.subject:
        return None
    return message.subject


def _sort_tree(node: Node) -> None:
    for each in reversed(_descendants([node])):  # children sorted before their parents
        each.children.sort(key=Node.order)


# endregion


def format_threads(threads: list[Node]) -> bytes:
    """``(1 2 (3)(4 5))(6)``: RFC 5256 section 4's thread-list, written without recursion."""
    out = bytearray()
    stack: list[Node | bytes] = list(reversed(threads))
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out += item
            continue
        # A chain of single children is written flat: "(1 2 3".
        numbers: list[bytes] = []
        cursor = item
        while True:
            if cursor.message is not None:
                numbers.append(b"%d" % cursor.message.number)
            if len(cursor.children) == 1 and cursor.message is not None:
                cursor = cursor.children[0]
                continue
            break
        out += b"(" + b" ".join(numbers)
        if not cursor.children:
            out += b")"
            continue
        if numbers:
            out += b" "
        stack.append(b")")
        stack.extend(reversed(cursor.children))
    return bytes(out)


async def cmd_thread(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    view = session.require_view()
    parser.sp()
    algorithm = parser.atom().upper()
    if algorithm not in _ALGORITHMS:
        raise ParseError(f"Unknown thread algorithm {algorithm}")
    parser.sp()
    charset = parse_charset(parser, required=True)
    program = parse_search_keys(parser)
    check_charset(charset)
    await session.sync_view(allow_expunge=False)
    found = await find_messages(session, view, program)
    # What threading reads of a message never changes: kept with the sort keys.
    known = session.server.sort_keys.keys(view.folder_id, view.uidvalidity, "THREAD")
    missing = [uid for _, uid in found if uid not in known]
    if missing:
        records = await load_records(session, view, missing, _COLUMNS)

        def parse() -> dict[int, Message]:
            return {uid: message_of(records[uid], 0, 0) for uid in missing}

        known.update(await asyncio.to_thread(parse) if len(missing) > _IN_LOOP else parse())
        session.server.sort_keys.trim()
    messages = [
        dataclasses.replace(known[uid], number=uid if context.uid else seq, seq=seq)
        for seq, uid in found
    ]
    thread = ordered_subject if algorithm == "ORDEREDSUBJECT" else references
    if len(messages) > _IN_LOOP:
        # Thousands of messages: the algorithm runs in a thread, other clients go on.
        threads = await asyncio.to_thread(thread, messages)
    else:
        threads = thread(messages)
    session.send(b"* THREAD " + format_threads(threads) if threads else b"* THREAD")
    session.ok(context, "Thread completed")
