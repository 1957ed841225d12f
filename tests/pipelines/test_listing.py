"""A step's log read in pages of bounded size (``pipelines.listing.read_log_page``)."""

from __future__ import annotations

import json
from pathlib import Path

from shipyard.pipelines.listing import read_log_page


def _write(path: Path, *lines: str, tail: str = "") -> None:
    path.write_bytes(("".join(f"{line}\n" for line in lines) + tail).encode())


class TestReadLogPage:
    def test_pages_of_lines_join_into_the_whole_log(self, tmp_path: Path) -> None:
        log = tmp_path / "s.log"
        structured = json.dumps({"ts": 1.0, "level": "info", "message": "hi", "n": 3})
        _write(log, "one", structured, "three", "four")
        whole = read_log_page(log, 0, 100)
        assert [x["message"] for x in whole.lines] == ["one", "hi", "three", "four"]
        assert whole.lines[1]["n"] == 3 and whole.lines[0]["stream"] == "output"
        assert not whole.more and whole.offset == log.stat().st_size
        got, offset = [], 0
        while True:
            page = read_log_page(log, offset, 3)
            got += page.lines
            offset = page.offset
            if not page.more:
                break
        assert got == whole.lines and offset == whole.offset

    def test_a_line_still_being_written_waits_for_its_newline(self, tmp_path: Path) -> None:
        log = tmp_path / "s.log"
        _write(log, "done", tail="half")
        page = read_log_page(log, 0, 100)
        assert [x["message"] for x in page.lines] == ["done"] and not page.more
        assert page.offset == len(b"done\n")
        with log.open("ab") as out:
            out.write(b" and more\n")
        later = read_log_page(log, page.offset, 100)
        assert [x["message"] for x in later.lines] == ["half and more"]

    def test_a_page_never_reads_more_than_its_bound(self, tmp_path: Path) -> None:
        """A line longer than the bound comes in pieces of the bound's size."""
        log = tmp_path / "s.log"
        _write(log, "x" * 250, "short")
        first = read_log_page(log, 0, 100, max_bytes=100)
        assert [len(x["message"]) for x in first.lines] == [100] and first.more
        pieces, offset = [], 0
        for _ in range(10):
            page = read_log_page(log, offset, 100, max_bytes=100)
            pieces += [x["message"] for x in page.lines]
            offset = page.offset
            if not page.more:
                break
        assert "".join(pieces[:-1]) == "x" * 250 and pieces[-1] == "short"

    def test_a_missing_log_is_an_empty_page(self, tmp_path: Path) -> None:
        page = read_log_page(tmp_path / "none.log", 7, 10)
        assert page.lines == [] and page.offset == 7 and not page.more
        assert read_log_page(None, 0, 10).lines == []
