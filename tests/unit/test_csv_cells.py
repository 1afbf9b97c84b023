"""The API's CSV and the portal's Download CSV write every cell alike: one set of cases, both runs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from typing import Any

import pytest

from breakout.csv_cells import csv_cell, csv_line
from tests.conftest import ROOT

CASES: list[dict[str, Any]] = json.loads((ROOT / "tests" / "csv_cells.json").read_text())["cases"]
PORTAL_MODULE = ROOT / "api" / "static" / "csv-cells.js"

# Imports the portal's module as the browser does (an ES module, whatever Node's defaults for
# a .js file are) and prints the cell of every case's input.
NODE_SCRIPT = """
import { readFileSync } from "node:fs";
const [module, cases] = process.argv.slice(1);
const source = readFileSync(module).toString("base64");
const { csvCell } = await import(`data:text/javascript;base64,${source}`);
const inputs = JSON.parse(readFileSync(cases, "utf8")).cases.map((c) => c.input);
process.stdout.write(JSON.stringify(inputs.map(csvCell)));
"""


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_python_writes_each_cell(case: dict[str, Any]) -> None:
    assert csv_cell(case["input"]) == case["cell"]


def test_the_portal_writes_each_cell_alike() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the portal's csv-cells.js was not run against the cases")
    result = subprocess.run(
        [
            node,
            "--input-type=module",
            "-e",
            NODE_SCRIPT,
            str(PORTAL_MODULE),
            str(ROOT / "tests" / "csv_cells.json"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    cells = json.loads(result.stdout)
    assert {case["name"]: cell for case, cell in zip(CASES, cells, strict=True)} == {
        case["name"]: case["cell"] for case in CASES
    }


def test_a_csv_reader_reads_back_each_value_as_it_was_or_behind_a_quote() -> None:
    (read,) = csv.reader(io.StringIO(csv_line([case["input"] for case in CASES]), newline=""))
    for case, cell in zip(CASES, read, strict=True):
        text = "" if case["input"] is None else str(case["input"])
        assert cell in (text, "'" + text), case["name"]
