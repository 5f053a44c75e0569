"""tmux control mode, sans-IO: framing of replies and notifications, output escapes,
argument quoting and pane rows, checked without a tmux server.

The transcript below was recorded from a real ``tmux -C`` (3.3a); the other inputs are
what tmux could send on a bad day, and what a pane's owner could make a command print.
"""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisord_agents.errors import TmuxError
from supervisord_agents.tmux import PaneInfo
from supervisord_agents.tmux_protocol import (
    PANE_FORMAT,
    ControlParser,
    Item,
    Notification,
    Reply,
    command_line,
    pane_output,
    parse_pane,
    quote,
    unescape_output,
)

# Attach, then: set-option -g @x '%end 1 999 1'; show-option -gv @x; bogus-cmd;
# list-windows -F '#{window_id} #{window_name}'; new-window -d 'printf ...'.
TRANSCRIPT = (
    b"%begin 1796222866 265 0\n%end 1796222866 265 0\n"
    b"%session-changed $0 x\n"
    b"%begin 1796222866 270 1\n%end 1796222866 270 1\n"
    b"%begin 1796222866 271 1\n%end 1 999 1\n%end 1796222866 271 1\n"
    b"%begin 1796222866 272 1\nparse error: unknown command: bogus-cmd\n%error 1796222866 272 1\n"
    b"%begin 1796222866 273 1\n@0 bash\n%end 1796222866 273 1\n"
    b"%begin 1796222866 274 1\n%end 1796222866 274 1\n"
    b"%window-add @1\n%window-renamed @1 bash\n"
    b"%output %1 a\\010\\033[0m\\015\\015\\012\n"
    b"%unlinked-window-close @1\n%exit\n"
)
TRANSCRIPT_ITEMS: list[Item] = [
    Reply(265, True, []),
    Notification("%session-changed", "$0 x"),
    Reply(270, True, []),
    Reply(271, True, ["%end 1 999 1"]),
    Reply(272, False, ["parse error: unknown command: bogus-cmd"]),
    Reply(273, True, ["@0 bash"]),
    Reply(274, True, []),
    Notification("%window-add", "@1"),
    Notification("%window-renamed", "@1 bash"),
    Notification("%output", "%1 a\\010\\033[0m\\015\\015\\012"),
    Notification("%unlinked-window-close", "@1"),
    Notification("%exit", ""),
]

AGENT = "worker-101500-0a1b2c"
TASK = "TASK-20250101-101500-0a1b2c3d"


def feed_all(data: bytes, cuts: list[int] | None = None) -> list[Item]:
    """Feed ``data`` to a new parser in pieces split at ``cuts`` (at once if None); all the items."""
    parser = ControlParser()
    bounds = [0, *sorted(cuts or []), len(data)]
    return [item for a, b in zip(bounds, bounds[1:], strict=False) for item in parser.feed(data[a:b])]


# --- framing ------------------------------------------------------------------------


def test_recorded_transcript() -> None:
    """A real session's output parses into its blocks, in order, and its notifications."""
    assert feed_all(TRANSCRIPT) == TRANSCRIPT_ITEMS


def test_notifications_carry_name_and_arguments() -> None:
    """A % line outside a block is a notification: its name with the %, and the rest after the first space."""
    items = feed_all(b"%sessions-changed\n%unlinked-window-close @3\n%exit server exited\n%session-renamed $1  two  \n")
    assert items == [
        Notification("%sessions-changed", ""),
        Notification("%unlinked-window-close", "@3"),
        Notification("%exit", "server exited"),
        Notification("%session-renamed", "$1  two  "),
    ]


def test_block_is_a_reply_with_its_lines() -> None:
    """The lines between %begin and the %end with its number are the reply, decoded, in order."""
    items = feed_all(b"%begin 1700000000 7 1\n$1 one\n\n$2 two\n%end 1700000000 7 1\n")
    assert items == [Reply(7, True, ["$1 one", "", "$2 two"])]


def test_error_block_carries_the_message() -> None:
    """A block closed by %error is a failed reply whose lines are tmux's message."""
    items = feed_all(b"%begin 1700000000 8 1\ncan't find session: $9\nsecond line\n%error 1700000000 8 1\n")
    assert items == [Reply(8, False, ["can't find session: $9", "second line"])]


def test_lines_that_look_like_framing_inside_a_block_are_output() -> None:
    """Inside a block, %end or %error with another number, %begin, and notifications are output lines."""
    body = [
        "%end 1700000000 99 1",
        "%error 1700000000 10 1",
        "%end 1700000000 1 1",
        "%end",
        "%begin 1700000000 11 1",
        "%sessions-changed",
        "%exit",
    ]
    data = b"%begin 1700000000 12 1\n" + "\n".join(body).encode() + b"\n%end 1700000000 12 1\n%sessions-changed\n"
    assert feed_all(data) == [Reply(12, True, body), Notification("%sessions-changed", "")]


def test_block_lines_are_decoded_with_replacement() -> None:
    """A line of output that is not UTF-8 keeps its valid characters and gets U+FFFD for the rest."""
    items = feed_all(b"%begin 1 3 1\ncaf\xc3\xa9 \xff!\n%end 1 3 1\n")
    assert items == [Reply(3, True, ["caf\u00e9 \ufffd!"])]


def test_partial_line_waits_for_its_newline() -> None:
    """A line cut across two reads is held back until the rest arrives, then parsed whole."""
    parser = ControlParser()
    assert parser.feed(b"%sessions-chan") == []
    assert parser.feed(b"ged\n%begin 1 5 1\nhal") == [Notification("%sessions-changed", "")]
    assert parser.feed(b"f\n%end 1 5") == []
    assert parser.feed(b" 1\n") == [Reply(5, True, ["half"])]


def test_byte_by_byte_equals_all_at_once() -> None:
    """Feeding the recorded transcript one byte at a time gives exactly the items of feeding it whole."""
    assert feed_all(TRANSCRIPT, list(range(1, len(TRANSCRIPT)))) == TRANSCRIPT_ITEMS


def closes(line: str, number: int) -> bool:
    """Whether ``line`` would end block ``number``: %end or %error with that number as third word."""
    return line.startswith(("%end ", "%error ")) and line.split(" ")[2:3] == [str(number)]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Item]]:
    """A control-mode stream of blocks and notifications, and the items it must parse into."""
    text = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=20)
    data, items = b"", []
    for number in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            name = "%" + draw(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=15))
            if name in ("%begin", "%end", "%error"):
                continue
            args = draw(text)
            data += f"{name} {args}\n".encode()
            items.append(Notification(name, args))
        else:
            lines = draw(st.lists(st.one_of(text, st.builds("%end 1 {} 1".format, st.integers(0, 20))), max_size=4))
            # Only a line that really is this block's end is left out (tmux could not print it either).
            lines = [line for line in lines if not closes(line, number)]
            ok = draw(st.booleans())
            close = "%end" if ok else "%error"
            data += "".join(f"{line}\n" for line in [f"%begin 1 {number} 1", *lines, f"{close} 1 {number} 1"]).encode()
            items.append(Reply(number, ok, lines))
    return data, items


@given(stream=streams(), data=st.data())
def test_split_anywhere_parses_the_same(stream: tuple[bytes, list[Item]], data: st.DataObject) -> None:
    """However a stream is cut into reads, it parses into the blocks and notifications it was built from."""
    raw, expected = stream
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    assert feed_all(raw, cuts) == expected


# --- tolerance ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [b"", b"plain text outside a block", b"%", b"%end 1 2 1", b"%error 1 2 1", b"%end", b"\xff\xfe%\x00",
     b"%begin", b"%begin 1", b"%begin 1 x 1", b"%begin 1 -3 1", b"%begin 1 " + b"9" * 5000 + b" 1", b"%begin \r"],
)
def test_garbage_between_blocks_is_dropped(line: bytes) -> None:
    """A line that is neither a notification nor a well-formed %begin is dropped; the next block still parses."""
    items = feed_all(line + b"\n%begin 1 4 1\nok\n%end 1 4 1\n")
    assert items == [Reply(4, True, ["ok"])]


def test_undecodable_notification_is_replaced_not_raised() -> None:
    """A notification line that is not UTF-8 still arrives, with U+FFFD for the bad bytes."""
    assert feed_all(b"%\xffname a\xfe\n") == [Notification("%\ufffdname", "a\ufffd")]


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_feed_never_raises(chunks: list[bytes]) -> None:
    """Arbitrary bytes, in arbitrary reads, never make the parser raise; every item is well typed."""
    parser = ControlParser()
    for chunk in chunks:
        for item in parser.feed(chunk):
            assert isinstance(item, Reply | Notification)


# --- pane output --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", b"plain"),
        ("\\033[32mgreen\\033[0m", b"\x1b[32mgreen\x1b[0m"),
        ("C:\\134path", b"C:\\path"),
        ("line\\015\\012", b"line\r\n"),
        ("\\000\\377", b"\x00\xff"),
        ("caf\u00e9", "caf\u00e9".encode()),
        ("\\0334", b"\x1b4"),  # exactly three digits: the fourth is text
        ("\\400 \\9 \\07 end\\", b"\\400 \\9 \\07 end\\"),  # not an escape: kept as it is
    ],
)
def test_unescape_output(text: str, expected: bytes) -> None:
    """Each backslash and three octal digits up to 377 is one byte; everything else is its UTF-8."""
    assert unescape_output(text) == expected


def test_output_notification_gives_pane_and_bytes() -> None:
    """%output and %extended-output give the pane id and the unescaped bytes; other notifications give None."""
    (output,) = feed_all(b"%output %1 \\033[32mok\\134\\015\\012\n")
    assert pane_output(output) == ("%1", b"\x1b[32mok\\\r\n")
    (extended,) = feed_all(b"%extended-output %2 150 : a : b\\012\n")
    assert pane_output(extended) == ("%2", b"a : b\n")
    assert pane_output(Notification("%output", "%3 ")) == ("%3", b"")
    assert pane_output(Notification("%window-close", "@3")) is None
    assert pane_output(Notification("%output", "")) is None
    assert pane_output(Notification("%output", "@1 text")) is None
    assert pane_output(Notification("%extended-output", "%2 150 no colon")) is None


# --- commands -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["two\nlines", "carriage\rreturn", "nul\0byte", "\n"])
def test_quote_refuses_line_breaks_and_nul(bad: str) -> None:
    """An argument that cannot travel on one control-mode line raises TmuxError."""
    with pytest.raises(TmuxError, match="newlines or NUL"):
        quote(bad)
    with pytest.raises(TmuxError):
        command_line(["display-message", bad])


def test_quote_single_quotes() -> None:
    """Arguments are single-quoted; a single quote inside ends the quotes, is escaped, and reopens them."""
    assert quote("it's") == "'it'\\''s'"
    assert quote("") == "''"
    assert quote("$HOME ~ ; \\ #{x}") == "'$HOME ~ ; \\ #{x}'"


@given(st.lists(st.text(st.characters(blacklist_characters="\n\r\0", blacklist_categories=("Cs",)))))
def test_command_line_round_trips_through_sh_quoting(args: list[str]) -> None:
    """One line per command, and its words split back (by tmux's sh-like single-quote rules) into the arguments."""
    line = command_line(args)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert shlex.split(line.decode()) == args


# --- pane rows ----------------------------------------------------------------------


def test_pane_format_has_the_fields_parse_pane_reads() -> None:
    """The list-panes format has eight fields, the session name (which may contain the separator) last."""
    fields = PANE_FORMAT.split("|")
    assert len(fields) == 8
    assert fields[-1] == "#{session_name}"


def test_parse_pane_reads_a_marked_row() -> None:
    """A well-formed row with both markers gives every field, typed."""
    assert parse_pane(f"$1|@2|%3|4242|0|{AGENT}|{TASK}|sa-{AGENT}") == PaneInfo(
        session_id="$1", session_name=f"sa-{AGENT}", window_id="@2", pane_id="%3", pane_pid=4242,
        pane_dead=False, agent_id=AGENT, task_id=TASK,
    )


def test_parse_pane_takes_the_agent_from_an_unmarked_session_name() -> None:
    """A session without markers but named for an agent is that agent's; its task is unknown."""
    pane = parse_pane(f"$1|@2|%3|4242|1|||sa-{AGENT}")
    assert pane is not None
    assert (pane.agent_id, pane.task_id, pane.pane_dead) == (AGENT, None, True)


def test_parse_pane_keeps_a_separator_in_the_session_name() -> None:
    """A session name containing | is read whole, and a stranger's session has no agent."""
    pane = parse_pane("$4|@5|%6|77|0|not-an-agent|TASK-bad|a|b|c")
    assert pane is not None
    assert (pane.session_name, pane.agent_id, pane.task_id) == ("a|b|c", None, None)


@pytest.mark.parametrize(
    "row",
    ["", "garbage", "$1|@2|%3|4242|0||", "$1|@2|%3|pid|0|||name", "$1|@2|%3||0|||name",
     "$1|@2|%3|-1|0|||name"],
)
def test_parse_pane_refuses_malformed_rows(row: str) -> None:
    """A row with too few fields or a pid that is not a number is None, not an exception."""
    assert parse_pane(row) is None
