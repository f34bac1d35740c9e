"""The report: result documents -> rich tables, markdown, PNG plots and a report folder.

The documents here are small literal ones with the shape the scenarios write (the scenarios'
own tests check that shape on real runs); the report must not need more than that shape.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from rich.console import Console

from chaos.lab import extras
from chaos.report.render import (
    headers,
    markdown_table,
    retry_storm_table,
    stampede_table,
    table_for,
    write_report,
)

RETRY_STORM_COLUMNS = headers("retry-storm")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _policy(policy: str, spike: int) -> dict[str, Any]:
    arrivals = [30, 40, 0, 0, 0, 0, 0, spike, 0, 5, 20, 20]
    return {
        "policy": policy,
        "keys": 100,
        "db_capacity_per_s": 200.0,
        "db_attempts": 325,
        "amplification": 3.25,
        "post_restore_peak_per_100ms": spike,
        "post_restore_peak_over_capacity": spike / 20,
        "recovery_s": 0.6,
        "ideal_recovery_s": 0.5,
        "client_errors": 0,
        "lost": 0,
        "timeline": {
            "bin_s": 0.1,
            "t0_ns": 1_700_000_000_000_000_000,
            "outage": [0.2, 0.7],
            "db_capacity_per_bin": 20.0,
            "db_arrivals": arrivals,
            "cache_attempts": [a + 10 for a in arrivals],
            "served": [0, 20, 0, 0, 0, 0, 0, 20, 20, 20, 20, 0],
        },
    }


RETRY_STORM: dict[str, Any] = {
    "scenario": "retry-storm",
    "command": "chaos scenario retry-storm --policies exponential,full --keys 100 --outage 1s",
    "config": {"outage_s": 0.5},
    "policies": [_policy("exponential", 90), _policy("full", 25)],
}

STAMPEDE: dict[str, Any] = {
    "command": "chaos scenario stampede --clients 5",
    "scenarios": [
        {
            "name": name,
            "clients": 5,
            "db_queries": queries,
            "errors": 0,
            "lost": 0,
            "seconds": 2.01,
            "cache_peak_rss_bytes": 50 * 2**20,
        }
        for name, queries in (("stampede", 5), ("single_flight", 1))
    ],
}


def _text(table: Any) -> str:
    console = Console(record=True, width=300)
    console.print(table)
    return console.export_text()


def test_retry_storm_table_has_a_row_per_policy_with_the_measures() -> None:
    text = _text(retry_storm_table(RETRY_STORM))
    for name in ("exponential", "full", *RETRY_STORM_COLUMNS):
        assert name in text
    assert "4.50" in text  # exponential's 90 per 100 ms over a capacity of 20


def test_stampede_table_has_both_scenarios() -> None:
    text = _text(stampede_table(STAMPEDE))
    assert "stampede" in text and "single_flight" in text and "db_queries" in text


def test_unknown_or_unexpected_document_is_refused() -> None:
    with pytest.raises(ValueError, match="not a result document"):
        table_for({"something": "else"})
    with pytest.raises(ValueError, match="expected a retry-storm result document"):
        retry_storm_table(STAMPEDE)


def test_markdown_table_escapes_pipes() -> None:
    assert markdown_table(["a", "b"], [["1|2", "3"]]).splitlines() == [
        "| a | b |",
        "| --- | --- |",
        "| 1\\|2 | 3 |",
    ]


def test_report_folder(tmp_path: Path) -> None:
    out = write_report(tmp_path / "report", [STAMPEDE, RETRY_STORM])
    assert out == tmp_path / "report"
    report = (out / "report.md").read_text()
    for needle in (
        RETRY_STORM["command"],
        STAMPEDE["command"],
        "| exponential |",
        "| full |",
        "| single_flight |",
        "![",
    ):
        assert needle in report, needle
    pngs = sorted(out.glob("*.png"))
    assert pngs, list(out.iterdir())
    for png in pngs:
        assert f"]({png.name})" in report
        assert png.read_bytes()[:8] == PNG_MAGIC
        with Image.open(png) as image:
            image.verify()
            assert image.format == "PNG"
            assert image.size[0] > 500 and image.size[1] > 300
    assert json.loads((out / "retry-storm.json").read_text()) == RETRY_STORM
    assert json.loads((out / "stampede.json").read_text()) == STAMPEDE


def test_two_documents_of_one_kind_keep_both(tmp_path: Path) -> None:
    out = write_report(tmp_path, [RETRY_STORM, RETRY_STORM])
    assert (out / "retry-storm.json").exists() and (out / "retry-storm-2.json").exists()
    assert (out / "retry-storm.png").exists() and (out / "retry-storm-2.png").exists()


class _Page(HTMLParser):
    """What a report page holds: its tables, its images' sources, every reference it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.images: list[str] = []
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tables += tag == "table"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster") and value:
                self.references.append(value)
                if tag == "img":
                    self.images.append(value)
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.references.append(tag)


def test_report_html_is_one_self_contained_page(tmp_path: Path) -> None:
    hostile = {**STAMPEDE, "command": "chaos scenario stampede <script>alert(1)</script>"}
    out = write_report(tmp_path / "report", [hostile, RETRY_STORM])
    page = (out / "report.html").read_text()
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.tables == 2  # one per document
    pngs = sorted(out.glob("*.png"))
    assert pngs and len(parser.images) == len(pngs)
    inlined = {base64.b64decode(src.split(",", 1)[1]) for src in parser.images}
    assert inlined == {png.read_bytes() for png in pngs}
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert [r for r in parser.references if not r.startswith("data:")] == []
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "| exponential |" not in page and "<td>exponential</td>" in page


def test_chaos_report_html_prints_the_page(tmp_path: Path) -> None:
    result_file = tmp_path / "r.json"
    result_file.write_text(json.dumps(RETRY_STORM))
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "report", str(result_file), "--html", "--out", "rep"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(Path("rep") / "report.html")
    assert (tmp_path / "rep" / "report.html").is_file() and (
        tmp_path / "rep" / "report.md"
    ).is_file()


def test_without_matplotlib_the_report_keeps_its_tables_and_says_plots_were_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(extras, "installed", lambda extra: extra != extras.PLOT)
    out = write_report(tmp_path, [STAMPEDE, RETRY_STORM])
    report = (out / "report.md").read_text()
    assert not list(out.glob("*.png"))
    assert markdown_table(RETRY_STORM_COLUMNS, []).splitlines()[0] in report
    # Only the retry storm has figures: one note, under its table.
    assert report.count("Plots skipped: matplotlib is not installed") == 1
    assert extras.install_hint(extras.PLOT) in report
    assert capsys.readouterr().err.count("report without plots") == 1
