"""The DSL: kinds, resources, DAG building from how outputs feed inputs, typed parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.errors import InvalidInput, NotFound, PipelineDefinitionError
from shipyard.pipelines import Pipeline, Resources, step
from shipyard.pipelines.graph import OutputRef
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.params import parse_params


@step(resources=Resources(cpu=2, memory="4Gi", gpu=0, accelerators={"tpu-v5e": 0}), retries=1)
def load(rows: int = 1000) -> list[int]:
    return list(range(rows))


@step()
def train(data: list[int], C: float = 1.0) -> float:
    return sum(data) * C


@step(outputs=("train", "test"))
def split(data: list[int]) -> tuple[list[int], list[int]]:
    return data[::2], data[1::2]


class TestResources:
    def test_quantities_follow_kubernetes_notation(self) -> None:
        r = Resources(cpu="500m", memory="4Gi", accelerators={"tpu-v5e": 2})
        assert r.amounts() == {"cpu": 0.5, "memory": 4 * 2**30, "gpu": 0.0, "tpu-v5e": 2.0}

    def test_bad_memory_is_a_clear_error(self) -> None:
        with pytest.raises(InvalidInput, match=r"resources\.memory"):
            Resources(memory="lots")


class TestPipeline:
    def test_unknown_kind_is_rejected_naming_the_known_ones(self) -> None:
        with pytest.raises(PipelineDefinitionError, match="data, training, validation, serving"):
            Pipeline("p", kind="etl")

    def test_bad_schedule_is_rejected(self) -> None:
        with pytest.raises(PipelineDefinitionError, match="cron"):
            Pipeline("p", kind="data", schedule="every day")

    def test_dag_comes_from_outputs_feeding_inputs(self) -> None:
        pipeline = Pipeline("train-breast-cancer", kind="training", schedule="0 3 * * *")

        @pipeline
        def build(C: float = 1.0) -> None:
            df = load()
            tr, _te = split(df)
            train(tr, C=C)
            train(df, C=C)

        graph = pipeline.build({"C": 0.5})
        assert list(graph.nodes) == ["load", "split", "train", "train_2"]
        assert graph.nodes["split"].upstream == ("load",)
        assert graph.nodes["train"].upstream == ("split",)
        assert graph.nodes["train"].arguments == {"data": OutputRef("split", "train"), "C": 0.5}
        assert graph.nodes["train_2"].upstream == ("load",)
        assert graph.downstream("load") == ["split", "train_2"]

    def test_step_outside_a_build_is_the_plain_function(self) -> None:
        assert train([1, 2, 3], C=2.0) == 12.0

    def test_wrong_step_call_is_a_definition_error(self) -> None:
        pipeline = Pipeline("p", kind="data")

        @pipeline
        def build() -> None:
            train(nope=1)

        with pytest.raises(PipelineDefinitionError, match="train"):
            pipeline.build()


class TestParams:
    def build(
        self,
        rows: int = 1,
        C: float = 1.0,
        fast: bool = False,
        name: str = "",
        out: Path = Path("."),
    ) -> None:
        """Parameters of every supported type."""

    def test_values_are_typed_by_annotations(self) -> None:
        got = parse_params(self.build, ["rows=5", "C=0.25", "fast=yes", "name=x=y", "out=/tmp"])
        assert got == {"rows": 5, "C": 0.25, "fast": True, "name": "x=y", "out": Path("/tmp")}

    def test_bad_value_names_the_param_and_type(self) -> None:
        with pytest.raises(InvalidInput, match="parameter 'rows' expects int, got 'many'"):
            parse_params(self.build, ["rows=many"])

    def test_unknown_param_lists_known_ones(self) -> None:
        with pytest.raises(InvalidInput, match="known parameters: rows, C, fast, name, out"):
            parse_params(self.build, ["rowz=1"])

    def test_missing_equals_sign_is_an_error(self) -> None:
        with pytest.raises(InvalidInput, match="NAME=VALUE"):
            parse_params(self.build, ["rows"])


class TestLoader:
    def test_missing_file_is_not_found(self) -> None:
        with pytest.raises(NotFound, match=r"nope\.py"):
            load_pipeline("nope.py")

    def test_file_with_two_pipelines_needs_a_name(self, tmp_path: Path) -> None:
        f = tmp_path / "two.py"
        f.write_text(
            "from shipyard.pipelines import Pipeline\n"
            "a = Pipeline('a', kind='data')\nb = Pipeline('b', kind='serving')\n"
        )
        with pytest.raises(PipelineDefinitionError, match=r"two\.py:NAME"):
            load_pipeline(str(f))
        assert load_pipeline(f"{f}:b")[1].kind.value == "serving"

    def test_error_in_the_file_is_one_line(self, tmp_path: Path) -> None:
        f = tmp_path / "broken.py"
        f.write_text("x = 1\nraise RuntimeError('oops')\n")
        with pytest.raises(
            PipelineDefinitionError, match=r"RuntimeError: oops \(.*broken\.py, line 2\)"
        ):
            load_pipeline(str(f))
