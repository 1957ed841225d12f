"""Loading a pipeline file: an error in it names the user's file and line (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.errors import NotFound, PipelineDefinitionError
from shipyard.pipelines.loader import load_pipeline


def test_a_syntax_error_names_the_file_and_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("from shipyard.pipelines import Pipeline\n\nx = (\n")
    with pytest.raises(PipelineDefinitionError) as caught:
        load_pipeline(str(bad))
    message = str(caught.value)
    assert message.startswith(f"cannot load {bad}: SyntaxError: ")
    assert message.endswith(f"({bad}, line 3)")


def test_an_error_inside_a_library_points_at_the_pipeline_files_line(tmp_path: Path) -> None:
    bad = tmp_path / "reads.py"
    bad.write_text('import json\n\n\nSETTINGS = json.loads("{")\n')
    with pytest.raises(
        PipelineDefinitionError, match=r"JSONDecodeError: .*\(.*reads.py, line 4\)$"
    ):
        load_pipeline(str(bad))


def test_a_misspelt_pipeline_suggests_the_one_defined(tmp_path: Path) -> None:
    f = tmp_path / "two.py"
    f.write_text(
        "from shipyard.pipelines import Pipeline, step\n\n"
        "@step()\ndef one() -> int:\n    return 1\n\n"
        "@Pipeline('digits-data', kind='data')\ndef a():\n    return one()\n\n"
        "@Pipeline('digits-training', kind='training')\ndef b():\n    return one()\n"
    )
    with pytest.raises(
        NotFound, match="no pipeline named 'digits-dta'; did you mean 'digits-data'"
    ):
        load_pipeline(f"{f}:digits-dta")
