"""Hardware advice: a cited catalogue, the smallest N devices that hold the model and their
split, published utilisation, infeasible options apart, training and serving ranked apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from shipyard.cli.quota import register
from shipyard.errors import ConfigError, InvalidInput
from shipyard.quota.estimate import serving_replicas
from shipyard.quota.hardware import (
    CATALOGUE,
    Catalogue,
    CatalogueEntry,
    ServingJob,
    ThisMachine,
    TrainingJob,
    Utilisation,
    advise_serving,
    advise_training,
    devices_needed,
    load_catalogue,
    measure_bandwidth,
    measure_cpu,
)

USE = {
    k: Utilisation(training=t, serving=0.5, sources={"training": "x", "serving": "y"})
    for k, t in (("gpu", 0.4), ("tpu", 0.5), ("cpu", 0.8))
}
# a machine with 64 GB, 100 GFLOP/s and 10 GB/s, measured (numbers scripted for arithmetic)
HERE = ThisMachine(100.0, 2, 10e9, 64e9)


def entry(name: str, memory_gb: float, groups: list[int], **kw: object) -> CatalogueEntry:
    fields: dict[str, object] = {
        "name": name,
        "kind": "gpu",
        "precision": "fp16",
        "peak_flops": 100e12,
        "memory_bandwidth": 1e12,
        "memory": memory_gb * 1e9,
        "price_per_hour": 2.0,
        "group_sizes": groups,
        "sources": {"compute": "datasheet", "price": "page", "groups": "page"},
    }
    return CatalogueEntry.model_validate({**fields, **kw})


class TestCatalogue:
    def test_every_figure_and_utilisation_factor_names_its_source(self) -> None:
        cat = load_catalogue()
        kinds = {e.kind for e in cat.entries}
        assert kinds == {"gpu", "tpu", "cpu"}  # CPU machine types are catalogued too
        for e in cat.entries:
            assert e.sources["compute"] and (e.price_per_hour is None or e.sources["price"])
        for kind in kinds:
            use = cat.utilisation[kind]
            assert 0 < use.training < 1 and use.sources["training"] and use.sources["serving"]
        # the published MFU figures, as cited (Llama 3: 38-43 % on H100; PaLM: 46.2 % on TPU v4)
        assert "38-43 %" in cat.utilisation["gpu"].sources["training"]
        assert "46.2 %" in cat.utilisation["tpu"].sources["training"]
        assert 0.38 <= cat.utilisation["gpu"].training <= 0.43
        assert cat.utilisation["tpu"].training == pytest.approx(0.462, abs=0.005)

    def test_a_device_class_without_a_sourced_utilisation_is_refused(self, tmp_path: Path) -> None:
        raw = yaml.safe_load(CATALOGUE.read_text())
        del raw["utilisation"]["cpu"]
        bad = tmp_path / "catalogue.yaml"
        bad.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match="no utilisation for cpu devices"):
            load_catalogue(bad)
        raw = yaml.safe_load(CATALOGUE.read_text())
        del raw["utilisation"]["gpu"]["sources"]["serving"]
        bad.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match="names no source for training and serving"):
            load_catalogue(bad)


class TestSizing:
    def test_the_smallest_rentable_group_that_holds_the_model(self) -> None:
        assert devices_needed(112e9, 80e9, [1, 2, 4, 8]) == 2
        assert devices_needed(112e9, 24e9, [1, 4, 8]) == 8  # 5 hold it; machines come in 4 or 8
        assert devices_needed(14e9, 16e9, [1, 4, 8]) == 1
        assert devices_needed(112e9, 16e9, [1, 4]) is None  # 7 needed, 4 at most

    def test_one_device_is_no_split_more_is_model_parallel(self) -> None:
        cat = Catalogue([entry("big", 80, [1, 2, 4, 8]), entry("huge", 200, [1])], USE)
        advice = advise_training(TrainingJob(1e18, parameters=7e9), HERE, cat)
        by = {o.name: o for o in advice.ranked}
        assert by["big"].devices == 2 and by["big"].split.startswith("model parallel over 2")
        assert by["huge"].devices == 1 and by["huge"].split == "one device"


class TestTraining:
    def test_infeasible_options_are_apart_and_never_ranked(self) -> None:
        cat = Catalogue([entry("small", 16, [1, 4]), entry("big", 80, [1, 2, 4, 8])], USE)
        # 7e9 parameters: 112 GB of training state; this 64 GB machine and 4 × 16 GB cannot hold it
        advice = advise_training(TrainingJob(1e18, parameters=7e9), HERE, cat)
        assert [o.name for o in advice.ranked] == ["big"]
        assert {o.name for o in advice.infeasible} == {"small", "this machine"}
        small = next(o for o in advice.infeasible if o.name == "small")
        assert "needs 7 devices" in small.why_not and "largest group is 4" in small.why_not
        assert all(not o.feasible for o in advice.infeasible) and advice.best is not None
        assert advice.best.feasible

    def test_time_uses_the_published_utilisation_not_the_peak(self) -> None:
        cat = Catalogue([entry("g", 80, [1])], USE)
        (o, _local) = sorted(
            advise_training(TrainingJob(3.6e17), HERE, cat).ranked, key=lambda o: o.seconds
        )
        assert o.seconds == pytest.approx(3.6e17 / (100e12 * 0.4))  # 2.5× the peak's time
        assert o.cost == pytest.approx(o.seconds / 3600 * 2.0)
        assert o.per_dollar == pytest.approx(3.6e17 / o.cost)

    def test_ranked_by_cost_per_run_not_by_speed(self) -> None:
        cheap = entry("cheap", 80, [1], peak_flops=50e12, price_per_hour=1.0)
        fast = entry("fast", 80, [1], peak_flops=200e12, price_per_hour=8.0)
        advice = advise_training(TrainingJob(1e18), HERE, Catalogue([fast, cheap], USE))
        assert advice.best is not None and advice.best.name == "cheap"  # $/run: 1/50 < 8/200
        assert advice.fastest is not None and advice.fastest.name == "fast"
        assert advice.ranked[-1].name.startswith("this machine")  # no price: after the priced

    def test_six_n_d_with_twenty_tokens_per_parameter(self) -> None:
        job = TrainingJob.from_size(7e9)
        assert job.flops == pytest.approx(6 * 7e9 * 20 * 7e9)
        assert job.memory_needed == pytest.approx(112e9)
        assert TrainingJob.from_size(1e9, 1e10).flops == pytest.approx(6e19)
        with pytest.raises(InvalidInput, match="--tokens"):
            TrainingJob.from_size(1e9, 0)


class TestServing:
    def test_latency_at_the_predicted_qps_per_cost(self) -> None:
        slow = entry("slow", 24, [1], memory_bandwidth=0.3e12, price_per_hour=0.8)
        quick = entry("quick", 80, [1], memory_bandwidth=2e12, price_per_hour=4.0)
        job = ServingJob(7e9, qps=100)
        advice = advise_serving(job, HERE, Catalogue([quick, slow], USE))
        by = {o.name: o for o in advice.ranked}
        # batch-1 decoding reads 14 GB of weights per request at 50 % of the bandwidth
        assert by["slow"].seconds == pytest.approx(14e9 / (0.3e12 * 0.5))
        expected = serving_replicas(100, by["slow"].seconds, headroom=0.0).replicas
        assert by["slow"].replicas == expected
        assert by["slow"].cost == pytest.approx(expected * 0.8)
        assert advice.best is not None
        assert advice.best.cost == min(o.cost for o in advice.ranked if o.cost is not None)

    def test_a_latency_target_makes_slow_options_infeasible(self) -> None:
        slow = entry("slow", 24, [1], memory_bandwidth=0.3e12, price_per_hour=0.8)
        quick = entry("quick", 80, [1], memory_bandwidth=2e12, price_per_hour=4.0)
        advice = advise_serving(
            ServingJob(7e9, qps=100, p99_target_s=0.05), HERE, Catalogue([quick, slow], USE)
        )
        assert [o.name for o in advice.ranked] == ["quick"]  # slow is cheaper, but too slow
        slow_option = next(o for o in advice.infeasible if o.name == "slow")
        assert "more replicas do not fix that" in slow_option.why_not

    def test_serving_needs_the_model_size(self) -> None:
        with pytest.raises(InvalidInput, match="--params"):
            ServingJob(0.0)


def test_measured_throughput_and_bandwidth_are_real() -> None:
    measured = measure_cpu(max_threads=1, size=256, seconds=0.05)
    assert [(m.threads, m.dtype) for m in measured] == [(1, "float32"), (1, "float64")]
    assert all(m.gflops > 0.05 for m in measured)
    bandwidth = measure_bandwidth(16 * 1024**2, seconds=0.02)
    assert 1e8 < bandwidth < 1e13
    here = ThisMachine.of(measured, bandwidth=bandwidth, memory=8e9)
    (local,) = advise_training(TrainingJob(1e12), here, Catalogue([], USE)).ranked
    assert local.provenance == "measured"
    assert local.seconds == pytest.approx(1e12 / (measured[0].gflops * 1e9))


def test_the_command_proposes_a_feasible_configuration_for_a_7b_model() -> None:
    """`shipyard hardware advise --params 7e9`: no single 80 GB device holds 112 GB of training
    state, so it proposes several, says how they are split, and lists what cannot hold it."""
    app = typer.Typer()
    register(app)
    out = CliRunner().invoke(app, ["hardware", "advise", "--params", "7e9"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    text = out.output
    assert "the model asks for 112.0 GB" in text and "the model asks for 14.0 GB" in text
    assert "infeasible (not ranked)" in text and "ANSWERS" in text
    train = next(line for line in text.splitlines() if line.startswith("  train on "))
    assert "model parallel over" in train and "cheapest feasible run" in train
    assert next(line for line in text.splitlines() if line.startswith("  serve on "))
    raw = CliRunner().invoke(
        app, ["hardware", "advise", "--params", "7e9", "--only", "training", "--json"]
    )
    (training,) = json.loads(raw.output)
    assert training["best"]["feasible"] and training["best"]["devices"] >= 2
    assert all(not o["feasible"] for o in training["infeasible"])
    bad = CliRunner().invoke(app, ["hardware", "advise", "--params", "7e9", "--only", "both"])
    assert bad.exit_code != 0
