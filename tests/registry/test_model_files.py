"""No code runs from a model file handed in, unless its owner passes the trust flag (issue #20).

The hostile files are built here: a pickle whose payload writes a marker file when it is loaded,
MLflow folders written by hand (MLflow itself is not installed) whose model is cloudpickled,
named outside the folder, or reached through a symlink that leaves it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import typer
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sqlalchemy import select
from typer.testing import CliRunner

from registry.conftest import mlflow_folder
from shipyard.errors import ArtifactError, InvalidInput
from shipyard.pipelines import Runner
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.records import get_run
from shipyard.registry import TRUST_FLAG, Registry, Signature, UnsafeModelFile, import_mlflow
from shipyard.registry import flavors as fl
from shipyard.registry.model_files import inside
from shipyard.store.registry import ModelVersion
from shipyard.store.tables import AuditEvent
from shipyard.workspace import Workspace


class Payload:
    """Unpickling this writes ``marker``: the stand-in for any code an attacker wants run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"with open({str(self.marker)!r}, 'w') as f: f.write('pwned')",)


def hostile_model(fitted: LogisticRegression, marker: Path) -> LogisticRegression:
    """A working classifier that carries the payload in an attribute."""
    clf = LogisticRegression().set_params(**fitted.get_params())
    clf.__dict__.update(fitted.__dict__)
    clf.payload = Payload(marker)  # type: ignore[attr-defined]
    return clf


@pytest.fixture
def workspace_registry() -> Registry:
    return Registry.of(Workspace.open())


class TestRegisterCommand:
    def test_a_pickle_is_refused_runs_nothing_and_registers_nothing(
        self, app: typer.Typer, fitted: LogisticRegression, tmp_path: Path
    ) -> None:
        marker = tmp_path / "marker"
        (tmp_path / "evil.pkl").write_bytes(pickle.dumps(hostile_model(fitted, marker)))
        r = CliRunner().invoke(app, ["models", "register", "evil", str(tmp_path / "evil.pkl")])
        assert isinstance(r.exception, UnsafeModelFile)
        assert "runs any code" in str(r.exception) and TRUST_FLAG in str(r.exception)
        assert not marker.exists()
        assert Registry.of(Workspace.open()).models() == []

    @pytest.mark.parametrize("suffix", [".joblib", ".pickle", ".PKL"])
    def test_every_pickle_suffix_is_refused(
        self, app: typer.Typer, fitted: LogisticRegression, tmp_path: Path, suffix: str
    ) -> None:
        marker = tmp_path / "marker"
        path = tmp_path / f"evil{suffix}"
        path.write_bytes(pickle.dumps(hostile_model(fitted, marker)))
        r = CliRunner().invoke(app, ["models", "register", "evil", str(path)])
        assert isinstance(r.exception, UnsafeModelFile)
        assert not marker.exists()

    def test_with_the_trust_flag_it_is_loaded_recorded_and_stored_as_skops(
        self,
        app: typer.Typer,
        fitted: LogisticRegression,
        iris_like: tuple[pd.DataFrame, np.ndarray],
        tmp_path: Path,
    ) -> None:
        marker = tmp_path / "marker"
        (tmp_path / "evil.pkl").write_bytes(pickle.dumps(hostile_model(fitted, marker)))
        x, _ = iris_like
        x.to_csv(tmp_path / "train.csv", index=False)
        r = CliRunner().invoke(
            app,
            ["models", "register", "evil", str(tmp_path / "evil.pkl"), TRUST_FLAG,
             "--training-data", str(tmp_path / "train.csv"), "--alias", "champion"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        assert marker.exists(), "the flag means: load it, and so run it"
        assert "registered evil v1 (sklearn)" in r.output and TRUST_FLAG in r.output
        ws = Workspace.open()
        registry = Registry.of(ws)
        info = registry.get("evil", version=1)
        trust = info.lineage["trust"]
        assert trust["flag"] == TRUST_FLAG and trust["by"] == "tester"
        assert trust["source"] == str(tmp_path / "evil.pkl")
        assert "pickle" not in info.lineage, "re-saved as skops, no pickle is stored"
        with ws.store.session() as s:
            event = s.scalars(select(AuditEvent).where(AuditEvent.action == "model.trust_pickle"))
            audit = event.one()
        assert (audit.actor, audit.subject_id, audit.detail) == ("tester", "evil/1", trust)
        marker.unlink()
        _, predictor = registry.load("evil")  # what a server does: no unpickling, no payload
        np.testing.assert_array_equal(predictor.predict(x.to_numpy()), fitted.predict(x.to_numpy()))
        assert not marker.exists()
        shown = CliRunner().invoke(app, ["models", "show", "evil"])
        assert shown.exit_code == 0 and TRUST_FLAG in shown.output, shown.output

    def test_a_trusted_pickle_that_skops_cannot_hold_stays_a_recorded_pickle(
        self, app: typer.Typer, tmp_path: Path, workspace_registry: Registry
    ) -> None:
        (tmp_path / "neg.joblib").write_bytes(pickle.dumps(np.negative))
        sig = tmp_path / "sig.json"
        sig.write_text(json.dumps({"inputs": [{"name": "x", "type": "double"}]}))
        r = CliRunner().invoke(
            app,
            ["models", "register", "neg", str(tmp_path / "neg.joblib"), TRUST_FLAG,
             "--signature", str(sig), "--alias", "champion"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        info, predictor = workspace_registry.load("neg")
        assert info.flavor == "python" and info.lineage["pickle"] == "trusted-file"
        np.testing.assert_array_equal(predictor.predict(np.array([[2.0]])), [[-2.0]])

    def test_a_skops_file_naming_a_function_is_refused(
        self, app: typer.Typer, tmp_path: Path, workspace_registry: Registry
    ) -> None:
        """``FunctionTransformer(func=eval)`` would run request strings as code."""
        (tmp_path / "eval.skops").write_bytes(sio.dumps(FunctionTransformer(func=eval)))
        r = CliRunner().invoke(app, ["models", "register", "e", str(tmp_path / "eval.skops")])
        assert isinstance(r.exception, ArtifactError) and "builtins.eval" in str(r.exception)
        assert workspace_registry.models() == []

    def test_a_skops_model_registers_without_the_flag(
        self,
        app: typer.Typer,
        fitted: LogisticRegression,
        iris_like: tuple[pd.DataFrame, np.ndarray],
        tmp_path: Path,
        workspace_registry: Registry,
    ) -> None:
        x, _ = iris_like
        pipe = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression())
        pipe.fit(x.abs().to_numpy(), (x["a"] > 0).astype(int))
        (tmp_path / "m.skops").write_bytes(sio.dumps(pipe))
        x.to_csv(tmp_path / "train.csv", index=False)
        r = CliRunner().invoke(
            app,
            ["models", "register", "m", str(tmp_path / "m.skops"), "--training-data",
             str(tmp_path / "train.csv"), "--alias", "champion"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        info, predictor = workspace_registry.load("m")
        assert "trust" not in info.lineage
        data = x.abs().to_numpy()
        np.testing.assert_array_equal(predictor.predict(data), pipe.predict(data))


class TestMlflowFolders:
    @pytest.mark.parametrize("serializer", [cloudpickle.dumps, pickle.dumps])
    def test_a_pickled_mlflow_model_is_refused_and_runs_nothing(
        self,
        registry: Registry,
        fitted: LogisticRegression,
        tmp_path: Path,
        serializer: object,
    ) -> None:
        marker = tmp_path / "marker"
        data = serializer(hostile_model(fitted, marker))  # type: ignore[operator]
        folder = mlflow_folder(tmp_path / "m", "model.pkl", "cloudpickle", data)
        with pytest.raises(UnsafeModelFile, match="runs any code"):
            import_mlflow(registry, folder, "evil")
        assert not marker.exists()
        assert registry.models() == []

    def test_a_model_named_outside_the_folder_is_refused_even_when_trusted(
        self, registry: Registry, fitted: LogisticRegression, tmp_path: Path
    ) -> None:
        marker = tmp_path / "marker"
        (tmp_path / "outside.pkl").write_bytes(pickle.dumps(hostile_model(fitted, marker)))
        folder = mlflow_folder(tmp_path / "m", "../outside.pkl", "pickle", None)
        with pytest.raises(UnsafeModelFile, match="outside the model folder"):
            import_mlflow(registry, folder, "evil", trust_pickle=True)
        (tmp_path / "outside.skops").write_bytes(sio.dumps(fitted))
        folder = mlflow_folder(tmp_path / "abs", str(tmp_path / "outside.skops"), "skops", None)
        with pytest.raises(UnsafeModelFile, match="outside the model folder"):
            import_mlflow(registry, folder, "evil")
        assert not marker.exists()
        assert registry.models() == []

    def test_a_symlink_leaving_the_folder_is_refused(
        self, registry: Registry, fitted: LogisticRegression, tmp_path: Path
    ) -> None:
        (tmp_path / "outside.skops").write_bytes(sio.dumps(fitted))
        folder = mlflow_folder(tmp_path / "m", "model.skops", "skops", None)
        (folder / "model.skops").symlink_to(tmp_path / "outside.skops")
        with pytest.raises(UnsafeModelFile, match="outside the model folder"):
            import_mlflow(registry, folder, "evil")
        other = mlflow_folder(tmp_path / "n", "model.skops", "skops", sio.dumps(fitted))
        (other / "MLmodel").rename(tmp_path / "MLmodel")
        (other / "MLmodel").symlink_to(tmp_path / "MLmodel")
        with pytest.raises(UnsafeModelFile, match="outside the model folder"):
            import_mlflow(registry, other, "evil")
        assert registry.models() == []

    def test_a_symlink_loop_or_a_nul_in_a_name_is_one_clear_error(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        folder = mlflow_folder(tmp_path / "m", "model.skops", "skops", None)
        (folder / "model.skops").symlink_to(folder / "model.skops")
        with pytest.raises(UnsafeModelFile, match="Symlink loop"):
            import_mlflow(registry, folder, "loop")
        nul = mlflow_folder(tmp_path / "n", "model\x00.skops", "skops", None)
        with pytest.raises(UnsafeModelFile, match="cannot resolve"):
            import_mlflow(registry, nul, "nul")
        assert registry.models() == []

    def test_a_symlink_inside_the_folder_is_followed(
        self, registry: Registry, fitted: LogisticRegression, tmp_path: Path
    ) -> None:
        folder = mlflow_folder(tmp_path / "m", "model.skops", "skops", None)
        (folder / "data").mkdir()
        (folder / "data" / "real.skops").write_bytes(sio.dumps(fitted))
        (folder / "model.skops").symlink_to(folder / "data" / "real.skops")
        assert import_mlflow(registry, folder, "ok").version == 1

    def test_a_pickled_mlflow_model_under_trust_is_resaved_as_skops_and_recorded(
        self,
        registry: Registry,
        fitted: LogisticRegression,
        iris_like: tuple[pd.DataFrame, np.ndarray],
        tmp_path: Path,
    ) -> None:
        folder = mlflow_folder(tmp_path / "m", "model.pkl", "cloudpickle", pickle.dumps(fitted))
        info = import_mlflow(registry, folder, "ok", alias="champion", trust_pickle=True)
        assert info.flavor == "sklearn" and info.lineage["trust"]["by"] == "alice"
        assert registry.artifacts.get_bytes(info.artifact_digest)[:2] == b"PK", "a skops zip"
        x = iris_like[0].to_numpy()
        np.testing.assert_array_equal(registry.load("ok")[1].predict(x), fitted.predict(x))

    def test_a_malformed_mlmodel_gets_one_clear_error(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        folder = mlflow_folder(tmp_path / "m", "model.skops", "skops", b"")
        meta = yaml.safe_load((folder / "MLmodel").read_text())
        meta["signature"] = {"inputs": "42"}
        meta["flavors"]["sklearn"]["serialization_format"] = "skops"
        (folder / "MLmodel").write_text(yaml.safe_dump(meta))
        (folder / "model.skops").write_bytes(sio.dumps(LogisticRegression()))
        with pytest.raises(InvalidInput, match="JSON list"):
            import_mlflow(registry, folder, "x")


class TestStoredPickles:
    def test_pickle_bytes_handed_to_register_need_trust(self, registry: Registry) -> None:
        sig = Signature.from_json({"inputs": [{"name": "x"}]})
        data = pickle.dumps(np.negative)
        with pytest.raises(InvalidInput, match="trust flag"):
            registry.register("neg", None, flavor="python", signature=sig,
                              artifact=(data, fl.JOBLIB))  # fmt: skip
        with pytest.raises(ArtifactError, match="application/x-skops"):
            registry.register("neg", None, flavor="sklearn", signature=sig,
                              artifact=(data, fl.JOBLIB))  # fmt: skip
        assert registry.models() == []

    def test_an_object_registered_in_process_is_stored_as_a_pickle_of_known_origin(
        self, registry: Registry
    ) -> None:
        sig = Signature.from_json({"inputs": [{"name": "x"}]})
        info = registry.register("neg", np.negative, flavor="python", signature=sig)
        assert info.lineage["pickle"] == "object" and "trust" not in info.lineage
        assert registry.load("neg", version=1)[1].predict(np.array([[1.0]])) == [[-1.0]]

    def test_a_pickle_of_unrecorded_origin_is_never_loaded(self, registry: Registry) -> None:
        """A version whose record lost (or never had) its provenance is refused at load."""
        sig = Signature.from_json({"inputs": [{"name": "x"}]})
        registry.register("neg", np.negative, flavor="python", signature=sig)
        with registry.store.session() as s:
            row = s.scalars(select(ModelVersion)).one()
            row.lineage = {"run_id": None, "data": []}
        with pytest.raises(ArtifactError, match="unrecorded origin"):
            registry.load("neg", version=1)
        with pytest.raises(ArtifactError, match="unknown origin"):
            fl.load("python", pickle.dumps(np.negative))

    def test_an_in_memory_estimator_skops_cannot_load_is_refused_at_register(
        self, registry: Registry, iris_like: tuple[pd.DataFrame, np.ndarray]
    ) -> None:
        x, y = iris_like
        pipe = make_pipeline(FunctionTransformer(func=abs), LogisticRegression()).fit(x, y)
        with pytest.raises(ArtifactError, match="flavor='python'"):
            registry.register("m", pipe, training_data=x)
        assert registry.models() == []


def test_models_registered_inside_a_pipeline_step_load_without_any_flag(
    workspace: Workspace, tmp_path: Path
) -> None:
    """``register_model`` with in-memory objects: a scikit-learn model is stored as skops, a
    plain callable as a pickle of known origin; both load where a server loads them."""
    flow = tmp_path / "train.py"
    flow.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import pandas as pd
            from sklearn.linear_model import LogisticRegression
            from shipyard.pipelines import Pipeline, step
            from shipyard.registry import Signature, register_model

            @step()
            def fit() -> int:
                x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
                clf = LogisticRegression().fit(x.to_numpy(), [0, 0, 1, 1])
                register_model("clf", clf, training_data=x, alias="champion")
                sig = Signature.from_json({"inputs": [{"name": "a"}]})
                return register_model("neg", np.negative, flavor="python", signature=sig,
                                      alias="champion").version

            pipeline = Pipeline("train", kind="training")

            @pipeline
            def build() -> None:
                fit()
            """
        )
    )
    file, pipeline = load_pipeline(str(flow))
    with Runner(workspace) as runner:
        result = runner.run(file, pipeline, None)
    assert get_run(workspace.store, result.run_id)["status"] == "succeeded"
    registry = Registry.of(workspace)
    clf, predictor = registry.load("clf")
    assert clf.flavor == "sklearn" and clf.lineage["run_id"] == result.run_id
    assert predictor.predict(np.array([[3.0, 0.0]])).tolist() == [1]
    neg, negate = registry.load("neg")
    assert neg.lineage["pickle"] == "object" and "trust" not in neg.lineage
    assert negate.predict(np.array([[2.0]])).tolist() == [[-2.0]]


SEGMENTS = st.sampled_from(["..", ".", "a", "b", "in", "out", "", "/"])


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(SEGMENTS, min_size=1, max_size=6))
def test_inside_returns_a_path_in_the_folder_or_refuses(parts: list[str]) -> None:
    """Whatever a folder names (``..``, absolute paths, symlinks in and out), :func:`inside`
    gives a path under the folder or refuses; it never hands out one outside."""
    root = Path(tempfile.mkdtemp())
    try:
        folder = root / "model"
        (folder / "a").mkdir(parents=True)
        (root / "out").mkdir()
        (folder / "b").symlink_to(root / "out")  # leaves the folder
        (folder / "in").symlink_to(folder / "a")  # stays inside
        name = "/".join(parts)
        try:
            got = inside(folder, name)
        except UnsafeModelFile:
            escaped = (folder.resolve() / name).resolve()
            assert not escaped.is_relative_to(folder.resolve())
        else:
            assert got.is_relative_to(folder.resolve())
    finally:
        shutil.rmtree(root)


def test_the_command_refuses_a_pickle_in_one_line(
    fitted: LogisticRegression, tmp_path: Path
) -> None:
    """As a user runs it: exit code 1, one line on stderr, no traceback, nothing ran."""
    marker = tmp_path / "marker"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(hostile_model(fitted, marker)))
    proc = subprocess.run(
        [sys.executable, "-m", "shipyard", "models", "register", "e", str(tmp_path / "evil.pkl")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert TRUST_FLAG in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "trusted"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("scipy.sparse._csr.csr_matrix", True),
        ("numpy.ndarray", True),
        ("builtins.eval", False),  # a function, and not a trusted library's
        ("numpy.load", False),  # a trusted library's function: a model could call it
        ("os.system", False),
        ("numpy.distutils.nothing", False),  # a module that cannot be imported
        ("sklearn..x", False),
        ("sklearn.", False),
    ],
)
def test_skops_trusts_only_classes_of_trusted_libraries(name: str, trusted: bool) -> None:
    assert fl.trusted_skops_type(name) is trusted
