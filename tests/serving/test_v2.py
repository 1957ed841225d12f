"""Open Inference Protocol V2 over a real socket, with tritonclient's defaults (binary) too."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton

from serving.conftest import Running, fit_classifier


class TestEndpoints:
    def test_server_metadata_and_health(self, served_module: Running) -> None:
        with served_module.client() as c:
            meta = c.get("/v2").json()
            assert "binary_tensor_data" in meta["extensions"]
            assert c.get("/v2/health/live").json() == {"live": True}
            assert c.get("/v2/health/ready").status_code == 200

    def test_model_metadata_ready_and_versions(self, served_module: Running) -> None:
        with served_module.client() as c:
            meta = c.get("/v2/models/iris").json()
            assert meta["name"] == "iris" and meta["versions"] == ["1"]
            assert [i["name"] for i in meta["inputs"]] == ["a", "b", "c"]
            assert meta["inputs"][0]["shape"] == [-1]
            assert c.get("/v2/models/iris/versions/1").json()["name"] == "iris"
            ready = c.get("/v2/models/iris/ready")
            assert ready.json() == {"name": "iris", "ready": True}
            assert ready.headers["x-shipyard-model-version"] == "1"
            assert c.get("/v2/models/iris/versions/1/ready").status_code == 200
            missing = c.get("/v2/models/iris/versions/9/ready")
            assert missing.status_code == 404 and "version 9" in missing.json()["error"]
            assert c.get("/v2/models/nope").status_code == 404
            index = c.post("/v2/repository/index").json()
            assert {"name": "iris", "version": "1", "state": "READY"} in index

    def test_infer_json_table_and_columns_agree_with_the_model(
        self, served_module: Running
    ) -> None:
        clf, x = fit_classifier()
        rows = x.to_numpy()[:5]
        table = {"inputs": [{"name": "x", "shape": [5, 3], "datatype": "FP64",
                             "data": rows.tolist()}]}  # fmt: skip
        columns = {
            "id": "mine",
            "inputs": [
                {"name": n, "shape": [5], "datatype": "FP32", "data": rows[:, i].tolist()}
                for i, n in enumerate("abc")
            ],
        }
        with served_module.client() as c:
            for body in (table, columns):
                r = c.post("/v2/models/iris/infer", json=body, headers={"x-request-id": "r-42"})
                assert r.status_code == 200, r.text
                out = r.json()["outputs"][0]
                assert out["name"] == "predict" and out["shape"] == [5]
                np.testing.assert_array_equal(out["data"], clf.predict(rows))
                assert r.headers["x-request-id"] == "r-42"
                assert r.headers["x-shipyard-model-version"] == "1"
            assert r.json()["id"] == "mine"
            proba = c.post(
                "/v2/models/iris/versions/1/infer",
                json={**table, "outputs": [{"name": "predict_proba"}]},
            ).json()["outputs"][0]
            assert proba["shape"] == [5, 2]
            np.testing.assert_allclose(
                np.reshape(proba["data"], (5, 2)), clf.predict_proba(rows.astype(np.float64))
            )


class TestTritonClient:
    @pytest.mark.parametrize("binary", [True, False])
    def test_tritonclient_defaults_and_json(self, served_module: Running, binary: bool) -> None:
        clf, x = fit_classifier()
        rows = x.to_numpy()[:7].astype(np.float32)
        client = triton.InferenceServerClient(served_module.url.removeprefix("http://"))
        try:
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready("iris")
            assert client.get_model_metadata("iris")["name"] == "iris"
            tensor = triton.InferInput("input", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=binary)
            if binary:
                result = client.infer("iris", [tensor])  # defaults: binary in, binary out
            else:
                wanted = [triton.InferRequestedOutput("predict", binary_data=False)]
                result = client.infer("iris", [tensor], outputs=wanted)
            got = result.as_numpy("predict")
            assert got is not None
            np.testing.assert_array_equal(got, clf.predict(rows.astype(np.float64)))
        finally:
            client.close()

    def test_tritonclient_sees_the_error_message(self, served_module: Running) -> None:
        client = triton.InferenceServerClient(served_module.url.removeprefix("http://"))
        try:
            tensor = triton.InferInput("input", [1, 2], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 2), dtype=np.float32))
            with pytest.raises(triton.InferenceServerException, match=r"\[rows, 3\]"):
                client.infer("iris", [tensor])
        finally:
            client.close()
