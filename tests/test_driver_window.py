"""The driver's batches in flight: few in memory, and none written after a halt.

The window itself (the reader's thread waits for the oldest batch, it does not
spin) is tested without a clock in tests/test_window.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

from importer.dynamodb.request_pool import MAX_BATCH_THREADS
from importer.run.driver import RunConfig, run_import
from importer.run.pipeline import PipelineSettings, open_pipeline
from importer.transform.spec import Spec, load_spec
from tests.conftest import PRODUCT_SPEC


def _products(tmp_path: Path, rows: int) -> tuple[Spec, Path]:
    """The product spec and a CSV of `rows` valid rows."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(PRODUCT_SPEC)
    src = tmp_path / "rows.csv"
    lines = ["sku,name,price,qty,active"]
    lines += [f"SKU-{i},name {i},{i}.5,{i % 7},y" for i in range(rows)]
    src.write_text("\n".join(lines) + "\n")
    return load_spec(spec_path), src


class _CountingWriter:
    """Writes as the dry run does, and counts how many batches write at once.

    A batch's write waits until two batches have been writing at once (an event, not
    a sleep: a loaded machine cannot make them miss each other); a driver that never
    ran two at once would leave the peak at 1.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.now = self.peak = 0
        self.lock = threading.Lock()
        self.overlapped = threading.Event()

    def write_batch(self, items):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            if self.now >= 2:
                self.overlapped.set()
        try:
            self.overlapped.wait(30)
            return self.inner.write_batch(items)
        finally:
            with self.lock:
                self.now -= 1

    def close(self) -> None:
        self.inner.close()


def test_fifty_workers_keep_only_a_few_batches_in_memory(tmp_path: Path):
    """`--workers 50` is 50 requests in flight, not 50 batches' items held at once."""
    spec, src = _products(tmp_path, 3000)
    settings = PipelineSettings(spec=spec, mode="blind", dry_run=True, workers=50)
    with open_pipeline(settings) as pipeline:
        counting = pipeline.writer = _CountingWriter(pipeline.writer)
        assert pipeline.lanes is not None and pipeline.lanes.width == 50 // MAX_BATCH_THREADS
        config = RunConfig(source=str(src), batch_items=10)
        summary = run_import(config, pipeline=pipeline)
    assert summary.rows == summary.valid == 3000
    assert 2 <= counting.peak <= MAX_BATCH_THREADS


class _HeldTransforms:
    """The engine, with the first batch (line 2) held until `others` later batches are
    transforming, and those held until the run stops: the later batches are surely
    running, not yet written, when the first one settles over the limit (events, not
    sleeps: the outcome does not depend on how loaded the machine is)."""

    def __init__(self, inner, coordinator, others: int) -> None:
        self.inner = inner
        self.coordinator = coordinator
        self.others = others
        self.started = 0
        self.lock = threading.Lock()
        self.go = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def transform_batch(self, spec, header, rows, ctx):
        if any(line == 2 for line, _ in rows):
            assert self.go.wait(30), "the later batches never started"
        else:
            with self.lock:
                self.started += 1
                if self.started == self.others:
                    self.go.set()
            assert self.coordinator.wait_stopped(30), "the run never stopped"
        return self.inner.transform_batch(spec, header, rows, ctx)


def test_over_max_rejects_the_batches_in_the_air_write_nothing_more(tmp_path: Path):
    """The first batch is all bad data.  When it settles, over the limit, the run's
    coordinator halts: the batches already running (still transforming) stop before
    their writes, and their rows are counted as skipped, so the counts add up."""
    spec, src = _products(tmp_path, 60)
    text = src.read_text().splitlines()
    text[1:11] = [f"bad sku {i},n,1,1,y" for i in range(10)]  # batch 0: lines 2-11
    src.write_text("\n".join(text) + "\n")
    settings = PipelineSettings(spec=spec, mode="blind", dry_run=True, workers=4)
    with open_pipeline(settings) as pipeline:
        # 4 batch threads: batch 0 and three later ones run at once
        pipeline.engine = _HeldTransforms(pipeline.engine, pipeline.coordinator, others=3)
        writer = pipeline.writer = _CountingWriter(pipeline.writer)
        config = RunConfig(source=str(src), batch_items=10, max_rejects=3)
        summary = run_import(config, pipeline=pipeline)
    assert summary.bad_data == summary.rejected == 10 and summary.written == 0
    assert summary.halted_batches >= 3 and summary.skipped == 10 * summary.halted_batches
    assert summary.rows == summary.rejected + summary.skipped  # every row read is counted
    assert writer.peak == 0  # no batch wrote
    assert pipeline.coordinator.halt_reason is not None
    assert summary.aborted is not None and "not written" in summary.aborted
    assert f"({summary.skipped} rows)" in summary.aborted
