"""LineSplitter: bytes from a pipe → console lines (pure)."""

from __future__ import annotations

from agent.supervise.lines import LineSplitter


def split(*chunks: bytes, now: float = 0.0) -> list[str]:
    splitter = LineSplitter()
    out: list[str] = []
    for chunk in chunks:
        out += splitter.feed(chunk, now)
    return out + splitter.finish(now)


def test_lines_empty_lines_and_a_last_line_without_newline() -> None:
    assert split(b"a\n\nb\nlast") == ["a", "", "b", "last"]
    assert split(b"") == []
    assert split(b"x\n") == ["x"]


def test_lines_split_across_reads_and_crlf() -> None:
    assert split(b"hel", b"lo\nwo", b"rld\r\n") == ["hello", "world"]


def test_carriage_return_progress_keeps_the_last_segment() -> None:
    assert split(b"10%\r50%\r100%\ndone\n") == ["100%", "done"]
    assert split(b"10%\r", b"100%\r", b"\n") == ["100%"]
    assert split(b"epoch 1\r     \r") == ["epoch 1"]  # a blank "clear line" does not win
    assert split(b"a\r\rb\n") == ["b"]
    assert split(b"50%\r100%\r") == ["100%"]  # stream ends inside a progress run


def test_endless_progress_is_shown_periodically_and_not_buffered() -> None:
    splitter = LineSplitter(progress_every=10.0)
    shown: list[str] = []
    for second in range(31):
        shown += splitter.feed(f"step {second}\r".encode(), float(second))
    assert shown == ["step 10", "step 20", "step 30"]
    assert len(splitter._pending) < 100
    shown += splitter.feed(b"step 31\r\n", 31.0)  # the final state is not lost
    assert shown[-1] == "step 31"


def test_utf8_split_across_reads_and_invalid_bytes() -> None:
    text = "héllo wörld ✓\n".encode()
    assert split(*[text[i : i + 1] for i in range(len(text))]) == ["héllo wörld ✓"]
    assert split(b"bad \xff\xfe bytes\n") == ["bad \ufffd\ufffd bytes"]


def test_binary_output_does_not_crash() -> None:
    data = bytes(range(256)) * 100
    out = split(data)
    assert out and all(isinstance(line, str) for line in out)


def test_very_long_line_is_cut_into_chunks_as_it_arrives() -> None:
    splitter = LineSplitter(max_chars=1000)
    out = splitter.feed(b"x" * 2500, 0.0)
    assert out == ["x" * 1000, "x" * 1000]  # emitted before any newline arrives
    out += splitter.feed(b"y\n", 0.0)
    assert out[-1] == "x" * 500 + "y"
    assert "".join(out) == "x" * 2500 + "y"


def test_a_line_of_exactly_the_limit_is_one_line() -> None:
    splitter = LineSplitter(max_chars=10)
    assert splitter.feed(b"x" * 10 + b"\n" + b"y" * 25 + b"\nz", 0.0) == [
        "x" * 10,
        *["y" * 10] * 2,
        "y" * 5,
    ]
    assert splitter.finish(0.0) == ["z"]


def test_plain_chunks_and_progress_chunks_mix() -> None:
    chunks = [b"a\nb", b"c\n10%\r", b"20%\rdone\nd", b"e\n"]
    assert split(*chunks) == ["a", "bc", "done", "de"]
    assert split(b"a\nb", b"c\r\n", b"x\n") == ["a", "bc", "x"]
